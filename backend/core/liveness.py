"""Heartbeats of the processes that have no HTTP endpoint: Celery beat, the Celery workers, the relay.

Two kinds, for two readers:

- **Poll-tick heartbeats in Redis**, read by /healthz in any web process (core.health). Beat records
  when it sends the poll tick (`before_task_publish` in the beat process only, which `beat_init` marks);
  a worker records when it starts one (`task_prerun`). One SET each per tick, under the project's
  Redis prefix (core.limits.key), kept a day.
- **Heartbeat files**, read by the container health checks (docker/healthcheck.py, which runs inside
  the container and needs no engine). The worker refreshes `worker` from its consumer's event loop (a
  bootstep with a repeating timer: a wedged consumer stops refreshing, a lost broker stops the step);
  beat refreshes `beat` when it sends a poll tick; the relay refreshes `relay` from its loop
  (orders.relay). Files live in HEARTBEAT_DIR; touching one is a single utime.

core.celery connects the receivers and adds the bootstep; nothing here imports the orders app, so the
poll task is named by its registered name.
"""

import logging
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery, bootsteps, signals
from django.conf import settings

from . import limits

logger = logging.getLogger(__name__)

POLL_TICK_TASK = "orders.poll_due_legs"  # orders.tasks.poll_due_legs, the beat tick
BEAT, WORKERS = "beat", "workers"
KEY_TTL_SECONDS = 24 * 3600
# When this process started (Django setup imports core, whose Celery app imports this module): a
# heartbeat /healthz has not seen yet counts from here.
PROCESS_STARTED_AT = time.time()


# --- poll-tick heartbeats in Redis ---------------------------------------------------------------


def tick_interval_seconds() -> int:
    """How often beat sends the poll tick (orders.schedules installs it so): whole seconds, at least 1."""
    return max(1, round(settings.POLL_INTERVAL_SECONDS))


def _key(name: str) -> str:
    return limits.key("heartbeat", name)


def record(name: str, at: float | None = None) -> None:
    """Store when `name` (BEAT: a tick sent; WORKERS: a tick taken) last happened, as Unix time.

    Redis unreachable: logged, never raised; /healthz reports Redis itself.
    """
    try:
        limits.client().set(_key(name), repr(time.time() if at is None else at), ex=KEY_TTL_SECONDS)
    except redis.RedisError as error:
        logger.warning("Heartbeat %s not recorded, Redis is unavailable: %s", name, error)


def last_seen() -> dict[str, float | None]:
    """When beat last sent a poll tick and a worker last took one (Unix time; None: not recorded).

    Raises redis.RedisError when Redis cannot be read.
    """
    names = (BEAT, WORKERS)
    values = limits.client().mget([_key(name) for name in names])
    return {name: float(value) if value else None for name, value in zip(names, values, strict=True)}


# --- heartbeat files -----------------------------------------------------------------------------


def heartbeat_path(name: str) -> Path:
    return Path(settings.HEARTBEAT_DIR) / name


def touch(name: str) -> None:
    """Refresh the heartbeat file `name` (created, with its directory, on first use)."""
    path = heartbeat_path(name)
    try:
        path.touch()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as error:  # a full or read-only disk: the check will say so, the process goes on
        logger.warning("Heartbeat file %s not refreshed: %s", path, error)


class FileHeartbeat:
    """A heartbeat file refreshed at most every HEARTBEAT_SECONDS, for loops that run far more often."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.interval = settings.HEARTBEAT_SECONDS
        self.last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            touch(self.name)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: refresh the `worker` file from the consumer's timer every HEARTBEAT_SECONDS.

    The timer runs on the consumer's event loop, so the file goes stale when the loop is wedged; the
    consumer stops its steps while it reconnects to a lost broker, so it goes stale then too.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        touch("worker")
        self.timer_entry = parent.timer.call_repeatedly(settings.HEARTBEAT_SECONDS, touch, ("worker",))

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    shutdown = stop


# --- Celery signal receivers ---------------------------------------------------------------------

_in_beat = False


def _beat_started(sender: Any = None, **kwargs: Any) -> None:
    """beat_init: this process is beat, whose task publications are ticks being sent."""
    global _in_beat
    _in_beat = True
    logger.info("Beat heartbeats: Redis key %s, file %s", _key(BEAT), heartbeat_path("beat"))


def _tick_sent(sender: str | None = None, **kwargs: Any) -> None:
    """before_task_publish (sender: the task's name), which fires in whichever process sends a task."""
    if _in_beat and sender == POLL_TICK_TASK:
        record(BEAT)
        touch("beat")


def _tick_taken(sender: Any = None, **kwargs: Any) -> None:
    """task_prerun (sender: the task), in the worker process that starts it."""
    if getattr(sender, "name", None) == POLL_TICK_TASK:
        record(WORKERS)


def install(app: Celery) -> None:
    """Connect the receivers and add the worker's bootstep (core.celery, before any worker starts)."""
    signals.beat_init.connect(_beat_started, weak=False)
    signals.before_task_publish.connect(_tick_sent, weak=False)
    signals.task_prerun.connect(_tick_taken, weak=False)
    app.steps["consumer"].add(WorkerHeartbeat)
