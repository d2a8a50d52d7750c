"""The relay releases committed events in seq order, up to the high-water mark (orders.relay).

Out-of-order commits are made on purpose: a writer holds its transaction open (OpenWriter) while a
later seq commits. The relay is stepped by hand here; realtime/tests/test_ordering.py runs it live.
"""

import time

import pytest
from django.db import connection

from orders import services
from orders.models import EventMark, OrderEvent
from orders.relay import MARK, Relay, RelayStats, released_seq
from orders.tests import factories
from orders.tests.writers import OpenWriter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def legs(customer, restaurants):
    """Kitchen legs of three orders: writers on different orders do not wait for each other's locks."""
    return [factories.make_order(customer, restaurants["melange"]).legs.get().pk for _ in range(3)]


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, events: list[OrderEvent]) -> None:
        self.batches.append([event.seq for event in events])

    @property
    def seqs(self) -> list[int]:
        return [seq for batch in self.batches for seq in batch]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def relay(legs, recorder) -> Relay:
    """A relay started after the fixtures' events, which it releases on its first step."""
    started = Relay(subscribers=[recorder], gap_wait_ms=1000)
    started.start()
    started.step()
    recorder.batches.clear()
    started.stats = RelayStats()  # the seqs of earlier tests were gaps too
    return started


def apply(leg_id: int, status: str) -> int:
    return services.leg_apply_status(leg_id=leg_id, provider_status=status, source="poll").seq


def test_a_later_seq_waits_for_an_earlier_one_that_commits_late(relay, recorder, legs):
    early = OpenWriter(legs[0], "not started")
    later = apply(legs[1], "not started")
    assert later > early.seq
    relay.step()
    assert recorder.seqs == [] and released_seq() == early.seq - 1, "nothing passes the open seq"
    early.commit()
    relay.step()
    assert recorder.seqs == [early.seq, later]
    assert released_seq() == later


def test_a_rolled_back_seq_is_skipped_at_once(relay, recorder, legs):
    relay.gap_wait = 60  # a rollback is recognised in PostgreSQL, not by waiting
    doomed = OpenWriter(legs[0], "not started")
    later = apply(legs[1], "not started")
    relay.step()
    assert recorder.seqs == []
    doomed.rollback()
    started = time.monotonic()
    relay.step()
    assert recorder.seqs == [later]
    assert time.monotonic() - started < 5, "decided in PostgreSQL, without waiting out REALTIME_GAP_WAIT_MS"
    assert relay.stats.rolled_back == 1 and relay.stats.given_up == 0


def test_a_writer_that_outlives_the_wait_is_given_up_then_released_late(relay, recorder, legs):
    relay.gap_wait = 0.2
    slow = OpenWriter(legs[0], "not started")
    later = apply(legs[1], "not started")
    relay.step()
    assert recorder.seqs == []
    time.sleep(0.25)
    relay.step()
    assert recorder.seqs == [later], "the events behind a stuck writer are not held past the wait"
    assert relay.stats.given_up == 1
    slow.commit()
    relay.step()
    assert recorder.seqs == [later, slow.seq], "committed after all: released late rather than lost"
    assert relay.stats.late == 1


def test_a_gap_with_no_writer_left_is_a_rollback_even_without_waiting(relay, recorder, legs):
    with connection.cursor() as cursor:  # a seq taken and never used, like a rolled-back insert
        cursor.execute("SELECT nextval(pg_get_serial_sequence('orders_orderevent', 'seq'))")
    later = apply(legs[0], "not started")
    relay.step()
    assert recorder.seqs == [later]


def test_a_step_over_many_rolled_back_seqs_reads_them_in_one_query(
    relay, recorder, legs, django_assert_max_num_queries
):
    """A relay starting above thousands of rolled-back seqs (a test database, a busy day's rollbacks) read
    each of them on its own before releasing anything: 9 s on a loaded machine in CI."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('orders_orderevent', 'seq')) FROM generate_series(1, 500)"
        )
    later = apply(legs[0], "not started")
    with django_assert_max_num_queries(6):
        relay.step()
    assert recorder.seqs == [later]
    assert relay.stats.rolled_back == 500


def test_a_busy_relay_reads_without_probing_first(relay, recorder, legs, django_assert_num_queries):
    """Each round trip of a step adds to every event's latency on a loaded machine."""
    apply(legs[0], "not started")
    relay.step()
    second = apply(legs[1], "not started")
    with django_assert_num_queries(2):  # the events, the mark
        relay.step()
    assert recorder.seqs[-1] == second
    with django_assert_num_queries(1):  # the events: none
        relay.step()
    with django_assert_num_queries(1):  # idle: the plain probe
        relay.step()


def test_several_writers_commit_in_reverse_and_leave_in_seq_order(relay, recorder, legs):
    writers = [OpenWriter(leg, "not started") for leg in legs]
    for writer in reversed(writers):
        relay.step()
        writer.commit()
    relay.step()
    assert recorder.seqs == sorted(writer.seq for writer in writers)


def test_a_new_relay_republishes_the_last_advance(relay, recorder, legs):
    """A relay that stopped between storing the mark and publishing: its successor publishes again."""
    first, second = apply(legs[0], "not started"), apply(legs[1], "not started")
    relay.step()
    assert recorder.seqs == [first, second]
    successor = Recorder()
    Relay(subscribers=[successor]).start()
    assert successor.seqs == [first, second]
    mark = EventMark.objects.get(name=MARK)
    assert (mark.previous, mark.seq) == (first - 1, second)


def test_a_failing_subscriber_is_retried(relay, legs):
    calls: list[list[int]] = []

    def flaky(events: list[OrderEvent]) -> None:
        calls.append([event.seq for event in events])
        if len(calls) == 1:
            raise ConnectionError("Redis is restarting")

    relay.subscribers = [flaky]
    seq = apply(legs[0], "not started")
    relay.step()
    assert calls == [[seq], [seq]]


def test_a_standby_relay_takes_over_when_the_leader_stops(legs):
    import threading

    def start(recorder: Recorder) -> tuple[Relay, threading.Thread]:
        running = Relay(subscribers=[recorder])
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        return running, thread

    def wait_for(recorder: Recorder, seq: int) -> None:
        deadline = time.monotonic() + 10
        while seq not in recorder.seqs:
            assert time.monotonic() < deadline, f"#{seq} was not released"
            time.sleep(0.02)

    leading, standing_by = Recorder(), Recorder()
    leader, leader_thread = start(leading)
    wait_for(leading, apply(legs[0], "not started"))
    standby, standby_thread = start(standing_by)
    try:
        seq = apply(legs[1], "not started")
        wait_for(leading, seq)
        time.sleep(0.3)
        assert seq not in standing_by.seqs, "only the leader releases"
        leader.stop()
        leader_thread.join(10)
        later = apply(legs[2], "not started")
        wait_for(standing_by, later)
    finally:
        for running, thread in ((leader, leader_thread), (standby, standby_thread)):
            running.stop()
            thread.join(10)
