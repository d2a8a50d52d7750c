"""The simulated geocoder places every address deterministically inside Kyiv; point_along walks a route."""

import pytest

from simulators.geo import LAT_RANGE, LNG_RANGE, geocode, point_along

PICKUP = "Khreshchatyk St, 22, Kyiv"
DROPOFF = "Obolonskyi Ave, 10, Kyiv"


def inside_kyiv(point: tuple[float, float]) -> bool:
    lat, lng = point
    return LAT_RANGE[0] <= lat <= LAT_RANGE[1] and LNG_RANGE[0] <= lng <= LNG_RANGE[1]


def test_geocode_is_deterministic_and_tells_addresses_apart():
    assert geocode(PICKUP) == geocode(PICKUP)
    geocode.cache_clear()
    assert geocode(PICKUP) == geocode(PICKUP)
    assert geocode(PICKUP) != geocode(DROPOFF)


def test_geocode_ignores_case_and_spacing():
    assert geocode(PICKUP) == geocode("  khreshchatyk st,   22, KYIV ")
    assert geocode("Вул. Хрещатик, 1") == geocode("вул.  хрещатик,\t1")


@pytest.mark.parametrize("address", [PICKUP, DROPOFF, "", "Ї", "вул. Хрещатик, 1", "x" * 10_000])
def test_geocode_lands_inside_kyiv(address):
    assert inside_kyiv(geocode(address))


def test_point_along_starts_and_ends_at_the_endpoints():
    route = [geocode(PICKUP), geocode("Velyka Vasylkivska St, 5, Kyiv"), geocode(DROPOFF)]
    assert point_along(route, 0) == route[0]
    assert point_along(route, -0.5) == route[0]
    assert point_along(route, 1) == route[-1]
    assert point_along(route, 1.5) == route[-1]


def test_point_along_walks_the_polyline_by_length():
    route = [(50.40, 30.40), (50.40, 30.50), (50.50, 30.50)]
    points = [point_along(route, step / 10) for step in range(11)]
    assert all(inside_kyiv(point) for point in points)
    assert len(set(points)) == 11, "every step moves"
    middle = point_along(route, 0.5)
    assert route[0][0] <= middle[0] <= route[-1][0]
    assert route[0][1] <= middle[1] <= route[-1][1]


def test_point_along_a_single_point_or_a_standing_route():
    assert point_along([(50.45, 30.5)], 0.3) == (50.45, 30.5)
    assert point_along([(50.45, 30.5), (50.45, 30.5)], 0.3) == (50.45, 30.5)
    with pytest.raises(ValueError):
        point_along([], 0.5)
