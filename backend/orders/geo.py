"""Map coordinates of addresses for the dashboard.

A stand-in for a geocoding service: the same deterministic function the provider simulators use, so
the dashboard places restaurants and customers where the simulated couriers drive. A deployment with
real providers replaces this module with calls to its geocoder.
"""

from functools import lru_cache

from simulators.geo import address_to_point


@lru_cache(maxsize=4096)
def geocode(address: str) -> tuple[float, float]:
    return address_to_point(address)
