"""The long-running processes settle the garbage collector (core.heap) before their work starts."""

import gc
from collections.abc import Callable, Iterator

import pytest
from daphne.server import Server
from django.core.management import call_command

from core.heap import THRESHOLDS
from core.serve import LimitedServer
from orders.management.commands import relay_events
from orders.relay import Relay


@pytest.fixture
def seen() -> Iterator[tuple[dict, Callable[..., None]]]:
    """What the collector looked like when the process's work began; the collector restored afterwards."""
    thresholds = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    state: dict = {}

    def start(*args: object) -> None:
        state.update(frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())

    yield state, start
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def frozen_before_work(state: dict) -> None:
    # everything pytest, Django and the project loaded: far more than any request leaves behind
    assert state["frozen"] > 50_000
    assert state["thresholds"] == THRESHOLDS == (10_000, 10, 10)


def test_the_web_process_freezes_its_startup_heap_before_serving(monkeypatch, seen):
    """Request garbage is nearly all cyclic; with the startup heap in the collector's reach, full
    collections walked it about once a second under load (core.heap.settle)."""
    state, start = seen
    monkeypatch.setattr(Server, "run", start)
    LimitedServer(application=None, endpoints=["tcp:port=8000:interface=127.0.0.1"]).run()
    frozen_before_work(state)


def test_the_relay_freezes_its_startup_heap_before_releasing(monkeypatch, seen):
    state, start = seen
    monkeypatch.setattr(Relay, "run", start)
    monkeypatch.setattr(relay_events.metrics, "start_exporter", lambda *args: False)
    monkeypatch.setattr(relay_events.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    call_command("relay_events")
    frozen_before_work(state)
