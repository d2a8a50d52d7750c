"""The web process's start (core.serve): what it settles before daphne serves."""

import gc
from collections.abc import Iterator

import pytest
from daphne.server import Server

from core.serve import GC_THRESHOLDS, LimitedServer


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_startup_heap_is_frozen_and_young_objects_collected_less_often_before_serving(
    monkeypatch, restored_gc
):
    """Request garbage is nearly all cyclic; with the startup heap in the collector's reach, full
    collections walked it about once a second under load (core.serve.settle_heap)."""
    seen = {}

    def serve(server: Server) -> None:
        seen.update(frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())

    monkeypatch.setattr(Server, "run", serve)
    assert gc.get_freeze_count() == 0
    LimitedServer(application=None, endpoints=["tcp:port=8000:interface=127.0.0.1"]).run()
    # everything pytest, Django and the project loaded: far more than any request leaves behind
    assert seen["frozen"] > 50_000
    assert seen["thresholds"] == GC_THRESHOLDS == (10_000, 10, 10)
