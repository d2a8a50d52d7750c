"""The dashboard's geocoder and the simulators' agree, so couriers drive where the map puts addresses."""

import pytest

from orders.geo import geocode
from simulators.geo import address_to_point


@pytest.mark.parametrize("address", ["Khreshchatyk 22", "  khreshchatyk   22 ", "Vasylkivska 72", "Ї"])
def test_the_backend_places_an_address_where_the_simulators_do(address):
    assert geocode(address) == address_to_point(address)
