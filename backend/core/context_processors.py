"""Template context shared by every page."""

from django.conf import settings
from django.http import HttpRequest


def map_config(request: HttpRequest) -> dict[str, dict[str, str]]:
    """The street map's tiles for pages with a map (`{{ map_config|json_script:"map-config" }}`).

    An empty `tile_url` means no tiles: the map draws a plain background (tests, air-gapped demos).
    The attribution is HTML from settings (an operator's choice, never user input).
    """
    return {"map_config": {"tile_url": settings.MAP_TILE_URL, "attribution": settings.MAP_TILE_ATTRIBUTION}}
