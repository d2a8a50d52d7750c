"""Map coordinates of addresses for the dashboard.

A stand-in for a geocoding service: a deterministic hash of the address text mapped into Kyiv. The
provider simulators place their couriers with the same function (simulators/geo.py, kept in step by
orders/tests/test_geo.py), so the dashboard shows restaurants and customers where the simulated
couriers drive. A deployment with real providers replaces this module with calls to its geocoder.
"""

import hashlib
from functools import lru_cache

# Kyiv's rough bounding box: every address lands inside it.
LAT_RANGE = (50.38, 50.52)
LNG_RANGE = (30.40, 30.65)
_PRECISION = 6


@lru_cache(maxsize=4096)
def geocode(address: str) -> tuple[float, float]:
    """The (lat, lng) of an address: a hash of its text (case and spacing ignored) mapped into Kyiv."""
    normalized = " ".join(address.split()).casefold()
    digest = hashlib.sha256(normalized.encode("utf-8")).digest()
    return (
        _scale(int.from_bytes(digest[:8], "big"), LAT_RANGE),
        _scale(int.from_bytes(digest[8:16], "big"), LNG_RANGE),
    )


def _scale(value: int, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return round(low + (value / 2**64) * (high - low), _PRECISION)
