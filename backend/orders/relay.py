"""Release committed OrderEvents in seq order, up to the high-water mark, to whoever subscribed.

`OrderEvent.seq` is allocated when the row is inserted, but transactions commit in another order (two
workers, the web process, webhooks): seq 905 can commit after seq 910. Whoever took the events as they
committed would hand 910 out before 905, and a client resuming `after=910` would never get 905.

So events leave only through one relay (`manage.py relay_events`; a second relay waits as a standby on
a PostgreSQL advisory lock). It reads the events above its mark in seq order and releases the run of
consecutive seqs. At a missing seq it waits: the writer of that seq has not committed yet, or rolled
back. Which of the two is decided in PostgreSQL, not by a guess:

- The writer allocated the seq (the INSERT's `nextval`) before the writer of any higher seq did, so
  before that higher seq committed and before the relay read it. An INSERT holds RowExclusiveLock on
  the table from before its `nextval` until its transaction ends. So the transactions that hold that
  lock when the gap is first seen (`writers`) include the missing seq's writer, unless it has finished.
- Once every one of those transactions has ended, the seq is committed (and read again) or never will be.
- A writer still running after REALTIME_GAP_WAIT_MS is given up on, with a warning: the events behind it
  are not held longer. Should its seq commit later, it is released as soon as it is seen, out of order,
  and logged as an error (`late`).

The mark is stored (EventMark) before the events are handed to the subscribers, so a client that reads
the mark after subscribing either replays an event from the database or receives it live. Subscribers
(realtime publishing; outgoing webhooks later) register in their AppConfig.ready(): `orders` announces,
it never imports them. The mark assumes the seq's sequence has no per-session cache (PostgreSQL's
default of 1): a cached value would be allocated long before its INSERT takes the lock.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection

from .models import EventMark, OrderEvent

logger = logging.getLogger(__name__)

MARK = "release"
# pg_try_advisory_lock key of the relay that releases (any constant; "relay" in ASCII)
LEADER_LOCK = 0x72656C6179
RETRY_SECONDS = 1.0
SUBSCRIBER_ATTEMPTS = 6

Subscriber = Callable[[list[OrderEvent]], None]
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Call `subscriber` with every released batch of events (seq ascending), in the relay's process."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


def released_seq() -> int:
    """The mark: every event at or below it has been released, or will never exist."""
    return EventMark.objects.filter(name=MARK).values_list("seq", flat=True).first() or 0


@dataclass
class Pending:
    """A missing seq: when it was first seen missing and who could still be writing it then."""

    since: float
    writers: frozenset[str]


@dataclass
class RelayStats:
    released: int = 0
    batches: int = 0
    gaps: int = 0  # missing seqs seen (most fill within milliseconds)
    rolled_back: int = 0  # missing seqs found never to commit
    given_up: int = 0  # missing seqs whose writer outlived REALTIME_GAP_WAIT_MS
    late: int = 0  # events released after a higher seq (a given-up seq that committed after all)
    held_ms_total: float = 0.0  # time events waited behind a gap, summed
    held_ms_max: float = 0.0
    held_events: int = 0  # events that waited behind a gap
    held_ms: list[float] = field(default_factory=list, repr=False)  # per held event, for percentiles

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        held = sorted(data.pop("held_ms"))
        data["held_ms_p50"] = held[len(held) // 2] if held else 0.0
        data["held_ms_p99"] = held[min(len(held) - 1, int(len(held) * 0.99))] if held else 0.0
        return data


class Relay:
    """Reads committed events above the mark and releases them in seq order. Not thread-safe: one loop."""

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        gap_wait_ms: float | None = None,
        subscribers: list[Subscriber] | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.subscribers = _subscribers if subscribers is None else subscribers
        # Called on every turn of the loop, leading or standing by (relay_events: the heartbeat file).
        self.heartbeat = heartbeat or (lambda: None)
        self.stopping = threading.Event()
        self.batch_size = batch_size or settings.REALTIME_RELAY_BATCH
        wait_ms = settings.REALTIME_GAP_WAIT_MS if gap_wait_ms is None else gap_wait_ms
        self.gap_wait = wait_ms / 1000
        self.mark = 0
        self.busy = False  # the last step read events
        self.pending: dict[int, Pending] = {}  # missing seqs between the mark and the highest seen
        self.given_up: dict[int, frozenset[str]] = {}  # skipped while their writer ran: watched for late
        self.first_seen: dict[int, float] = {}  # held events: when each was first read
        self.stats = RelayStats()

    # --- running -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Release until `stop()`; wait as a standby while another relay leads; survive database outages."""
        interval = settings.REALTIME_RELAY_INTERVAL_MS / 1000
        while not self.stopping.is_set():
            try:
                with self._leadership() as leading:
                    self.heartbeat()
                    if not leading:
                        continue
                    self.start()
                    while not self.stopping.is_set():
                        self.heartbeat()
                        started = time.monotonic()
                        if self.step() < self.batch_size:  # a full batch means more are waiting
                            # steps begin an interval apart: a step's own work is not added to the wait
                            self.stopping.wait(max(0.0, interval - (time.monotonic() - started)))
            except DatabaseError as error:  # PostgreSQL restarted or unreachable: start over
                logger.warning("Relay lost the database (%s); retrying in %ss", error, RETRY_SECONDS)
                _close_connection()
                self.stopping.wait(RETRY_SECONDS)
        _close_connection()

    def stop(self) -> None:
        self.stopping.set()

    @contextmanager
    def _leadership(self) -> Iterator[bool]:
        """Holds the leader lock for the session of this thread's connection; False while another has it."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK])
            leading = cursor.fetchone()[0]
        if not leading:
            logger.debug("Another relay is releasing events; standing by")
            self.stopping.wait(RETRY_SECONDS)
            yield False
            return
        logger.info("Relay releasing events")
        try:
            yield True
        finally:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LEADER_LOCK])
            except DatabaseError:
                pass  # the session is gone, and its lock with it

    def start(self) -> None:
        """Take the stored mark and hand out again the last advance, which may not have been published."""
        mark, _ = EventMark.objects.get_or_create(name=MARK)
        self.mark = mark.seq
        self.pending.clear()
        self.first_seen.clear()
        if mark.previous < mark.seq:
            events = list(OrderEvent.objects.filter(seq__gt=mark.previous, seq__lte=mark.seq).order_by("seq"))
            if events:
                logger.info("Relay republishing #%d..#%d", events[0].seq, events[-1].seq)
                self._hand_out(events)

    # --- one step ------------------------------------------------------------------------------------

    def step(self) -> int:
        """Release the events that can leave now; returns how many were read (a full batch: read again)."""
        if self.given_up:
            self._release_late()
        # The idle probe only while idle: after a step that read events, more are likely waiting
        if not self.busy and not self._anything_above_mark():
            return 0
        events = list(OrderEvent.objects.filter(seq__gt=self.mark).order_by("seq")[: self.batch_size])
        self.busy = bool(events)
        if not events:
            return 0
        now = time.monotonic()
        seen = {event.seq for event in events}
        missing = [seq for seq in range(self.mark + 1, events[-1].seq) if seq not in seen]
        new_missing = [seq for seq in missing if seq not in self.pending]
        if new_missing:
            writers = self._writers()
            for seq in new_missing:
                self.pending[seq] = Pending(now, writers)
            self.stats.gaps += len(new_missing)
        released, upto = self._consecutive(events, missing, now)
        if upto > self.mark:
            self._advance(upto)
            self._record_held(released, now)
            if released:
                self._hand_out(released)
        for event in events:
            if event.seq > upto:
                self.first_seen.setdefault(event.seq, now)
        return len(events)

    def _consecutive(self, events: list[OrderEvent], missing: list[int], now: float) -> tuple[list, int]:
        """The events that may leave (seq ascending) and the new mark: up to the first gap that can fill."""
        by_seq = {event.seq: event for event in events}
        current_writers: frozenset[str] | None = None
        ended: set[int] = set()
        committed: dict[int, OrderEvent] = {}
        released: list[OrderEvent] = []
        upto = self.mark
        for seq in range(self.mark + 1, events[-1].seq + 1):
            if seq in by_seq:
                released.append(by_seq[seq])
                upto = seq
                continue
            pending = self.pending[seq]
            if current_writers is None:
                current_writers = self._writers()
                # One read for every gap whose writers have all ended (a relay starting above thousands of
                # rolled-back seqs would otherwise read once per seq before releasing anything)
                ended = {gap for gap in missing if not self.pending[gap].writers & current_writers}
                committed = {event.seq: event for event in OrderEvent.objects.filter(seq__in=ended)}
            if seq in ended:
                # Every transaction that could be writing it has ended: committed (read it) or never.
                late = committed.get(seq)
                if late is not None:
                    released.append(late)
                else:
                    self.stats.rolled_back += 1
                    logger.debug("Seq #%d was rolled back", seq)
            elif now - pending.since >= self.gap_wait:
                self.stats.given_up += 1
                self.given_up[seq] = pending.writers
                logger.warning(
                    "Seq #%d still uncommitted after %.0f ms; releasing the events after it",
                    seq,
                    self.gap_wait * 1000,
                )
            else:
                break
            del self.pending[seq]
            upto = seq
        return released, upto

    def _release_late(self) -> None:
        """Given-up seqs that committed after all leave now; those whose writers all ended never will."""
        late = list(OrderEvent.objects.filter(seq__in=list(self.given_up)).order_by("seq"))
        for event in late:
            del self.given_up[event.seq]
            logger.error("Seq #%d committed after later events were released: released late", event.seq)
        if late:
            self.stats.late += len(late)
            self._hand_out(late)
        if self.given_up:
            writers = self._writers()
            for seq, candidates in list(self.given_up.items()):
                if not candidates & writers:
                    del self.given_up[seq]

    def _advance(self, upto: int) -> None:
        """Store the mark before anyone hears of the events (see the module's docstring)."""
        EventMark.objects.filter(name=MARK).update(previous=self.mark, seq=upto)
        self.mark = upto

    def _record_held(self, released: list[OrderEvent], now: float) -> None:
        for event in released:
            since = self.first_seen.pop(event.seq, None)
            if since is not None:
                held = (now - since) * 1000
                self.stats.held_events += 1
                self.stats.held_ms_total += held
                self.stats.held_ms_max = max(self.stats.held_ms_max, held)
                if len(self.stats.held_ms) < 100_000:
                    self.stats.held_ms.append(held)

    def _hand_out(self, events: list[OrderEvent]) -> None:
        self.stats.released += len(events)
        self.stats.batches += 1
        for subscriber in self.subscribers:
            self._call(subscriber, events)

    def _call(self, subscriber: Subscriber, events: list[OrderEvent]) -> None:
        """Hand a batch to one subscriber, retrying with backoff while it fails (Redis away for a moment).

        The events stay in the database: a subscriber that still fails gets the next batch, and clients
        that missed this one catch up by resuming from the mark.
        """
        delay = 0.1
        for attempt in range(1, SUBSCRIBER_ATTEMPTS + 1):
            try:
                subscriber(events)
                return
            except Exception:
                if attempt == SUBSCRIBER_ATTEMPTS or self.stopping.is_set():
                    logger.exception(
                        "%s failed %d times on #%d..#%d; going on",
                        getattr(subscriber, "__qualname__", subscriber),
                        attempt,
                        events[0].seq,
                        events[-1].seq,
                    )
                    return
                logger.warning("%s failed on #%d..#%d; retrying", subscriber, events[0].seq, events[-1].seq)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _anything_above_mark(self) -> bool:
        """The idle loop's probe, in plain SQL: an ORM query per REALTIME_RELAY_INTERVAL_MS costs CPU."""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {OrderEvent._meta.db_table} WHERE seq > %s LIMIT 1", [self.mark])
            return cursor.fetchone() is not None

    @staticmethod
    def _writers() -> frozenset[str]:
        """Transactions that may be inserting events now: they hold RowExclusiveLock on the table."""
        with connection.cursor() as cursor:
            cursor.execute(
                """SELECT virtualtransaction FROM pg_locks
                   WHERE locktype = 'relation' AND relation = %s::regclass AND mode = 'RowExclusiveLock'
                     AND granted AND pid <> pg_backend_pid()
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                [OrderEvent._meta.db_table],
            )
            return frozenset(row[0] for row in cursor.fetchall())


def _close_connection() -> None:
    try:
        connection.close()
    except DatabaseError:
        pass  # already broken: Django forgets it all the same
