"""The simulators' geography: where an address is, and where a courier is along a route.

The geocoding simulator (simulators.nominatim) answers with `geocode`, a deterministic hash of the
address text mapped into Kyiv, and the courier simulators fall back to it for an address sent without
coordinates: so the backend, which stores what the geocoder answered, and the simulated couriers agree on
where a customer lives. Standard library only.
"""

import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache

Point = tuple[float, float]  # (lat, lng)

# Kyiv's rough bounding box: every address lands inside it.
LAT_RANGE = (50.38, 50.52)
LNG_RANGE = (30.40, 30.65)
_PRECISION = 6
# A degree of longitude is shorter than a degree of latitude this far north.
_LNG_SCALE = math.cos(math.radians(sum(LAT_RANGE) / 2))


@lru_cache(maxsize=4096)
def geocode(address: str) -> tuple[float, float]:
    """The (lat, lng) of an address: a hash of its text (case and spacing ignored) mapped into Kyiv."""
    normalized = " ".join(address.split()).casefold()
    digest = hashlib.sha256(normalized.encode("utf-8")).digest()
    return (
        _scale(int.from_bytes(digest[:8], "big"), LAT_RANGE),
        _scale(int.from_bytes(digest[8:16], "big"), LNG_RANGE),
    )


def point_along(points: Sequence[Point], fraction: float) -> Point:
    """The point at ``fraction`` (0..1) of the way along the polyline through ``points``."""
    if not points:
        raise ValueError("a polyline needs at least one point")
    if fraction >= 1.0:
        return points[-1]
    fraction = max(fraction, 0.0)
    legs = list(zip(points, points[1:], strict=False))
    lengths = [_distance(start, end) for start, end in legs]
    remaining = fraction * sum(lengths)
    for (start, end), length in zip(legs, lengths, strict=True):
        if remaining <= length and length > 0:
            share = remaining / length
            return (
                round(start[0] + (end[0] - start[0]) * share, _PRECISION),
                round(start[1] + (end[1] - start[1]) * share, _PRECISION),
            )
        remaining -= length
    return points[-1]


def _scale(value: int, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return round(low + (value / 2**64) * (high - low), _PRECISION)


def _distance(start: Point, end: Point) -> float:
    """Straight-line length in degrees of latitude, longitude scaled to match."""
    return math.hypot(end[0] - start[0], (end[1] - start[1]) * _LNG_SCALE)
