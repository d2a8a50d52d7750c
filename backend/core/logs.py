"""Log lines that say which request, task, order and leg they belong to.

Ids live in context variables: the request-id middleware (core.request_ids) binds `request_id` for one
HTTP request, the Celery signals below bind `request_id`, `task_id` and `task` for one task (the request
id travels in a message header from the request that enqueued the task), and code that knows an order
or a leg binds it with `log_context(order_id=..., leg_id=...)`. `ContextFilter`, installed on the
console handler by settings.LOGGING (with `formatter_config`), copies the bound ids onto every record.

Two formats (LOG_FORMAT): `json`, one object per line for log collectors (python-json-logger), and
`text`, the plain local format with the ids appended in brackets. Celery workers and beat use the same
configuration: `connect_celery_signals` stops Celery from installing its own handlers.
"""

import functools
import inspect
import logging
import logging.config
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from celery import Task, signals
from pythonjsonlogger.core import RESERVED_ATTRS

LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept when it is this sane: it then appears in logs and headers as it came
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The Celery message header carrying the id of the request that enqueued a task
TASK_HEADER = "log_request_id"

# The ids a log line may carry, by the field name they have in JSON (and on the LogRecord)
_IDS: dict[str, ContextVar[str | int | None]] = {
    name: ContextVar(f"log_{name}", default=None)
    for name in ("request_id", "order_id", "leg_id", "task_id", "task")
}
# The text format's short labels, in the order they are appended
_TEXT_LABELS = {
    "request_id": "req",
    "task": "task",
    "task_id": "task_id",
    "order_id": "order",
    "leg_id": "leg",
}
# Task arguments bound as ids for the task's log lines (orders.tasks take ids, not models)
_TASK_ARGUMENT_IDS = ("order_id", "leg_id")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str:
    """`value` when it is a usable request id (<= 128 of A-Z a-z 0-9 . _ : -), else a fresh one."""
    if value and SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def current_ids() -> dict[str, str | int]:
    """The ids bound in this context, by field name; unknown ones left out."""
    return {name: value for name, var in _IDS.items() if (value := var.get()) is not None}


def bind(**ids: str | int | None) -> list[Token]:
    """Bind ids (request_id, order_id, leg_id, task_id, task) for the rest of the current context; the
    request middleware and the task signals undo it when their request or task ends. The tokens undo it
    sooner (`unbind`)."""
    unknown = set(ids) - set(_IDS)
    if unknown:
        raise TypeError(f"unknown log ids: {', '.join(sorted(unknown))} (known: {', '.join(_IDS)})")
    return [_IDS[name].set(value) for name, value in ids.items()]


def unbind(tokens: list[Token]) -> None:
    """Restore the ids `bind` replaced, most recent first."""
    for token in reversed(tokens):
        token.var.reset(token)


@contextmanager
def log_context(**ids: str | int | None) -> Iterator[None]:
    """Log lines inside the block carry these ids: `with log_context(order_id=order.pk): ...`."""
    tokens = bind(**ids)
    try:
        yield
    finally:
        unbind(tokens)


class ContextFilter(logging.Filter):
    """Puts the bound ids on each record (an id given in `extra=` wins). Installed on handlers, so it
    sees the records of every logger that propagates to them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_ids().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The plain local format, with the ids a record carries appended: `... message [req=ab12 order=7]`."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's naming)
        line = super().formatMessage(record)
        ids = " ".join(
            f"{label}={value}"
            for name, label in _TEXT_LABELS.items()
            if (value := getattr(record, name, None)) is not None
        )
        return f"{line} [{ids}]" if ids else line


def formatter_config(log_format: str) -> dict[str, Any]:
    """The `formatters` entry of settings.LOGGING for LOG_FORMAT.

    JSON fields: time (ISO 8601, UTC offset), level, logger, message, the bound ids, exc_info as text,
    and every `extra=` field except Django's `request` object (its text holds the query string, which
    may carry tickets or personal data; the message names the path).
    """
    if log_format == "json":
        return {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            "reserved_attrs": [*RESERVED_ATTRS, "request"],
        }
    if log_format == "text":
        return {"()": "core.logs.TextFormatter", "format": TEXT_FORMAT}
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


# --- Celery: the same configuration in workers and beat; request ids across the queue --------------


def _setup_celery_logging(**kwargs: Any) -> None:
    """setup_logging receiver: having one stops Celery from replacing the root logger's handlers with
    its own format; Django's LOGGING applies instead (LOG_LEVEL, not `--loglevel`, sets the level)."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def _add_request_id_header(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """before_task_publish receiver: a task enqueued during a request (or a task) carries its id."""
    request_id = _IDS["request_id"].get()
    if headers is not None and request_id is not None:
        headers.setdefault(TASK_HEADER, request_id)


# Tokens of the ids bound for each running task, by task id, undone when it ends. A dict rather than one
# slot: an eager task (task_always_eager) runs inside another task or request in the same thread.
_task_tokens: dict[str, list[Token]] = {}


@functools.cache
def _signature(run: Callable[..., Any]) -> inspect.Signature:
    """A task's signature, read once per task rather than at every run."""
    return inspect.signature(run)


def _task_argument_ids(task: Task, args: tuple, kwargs: dict) -> dict[str, int | str]:
    """The values of the task's arguments named order_id / leg_id."""
    try:
        bound = _signature(task.run).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return {}
    return {name: bound.arguments[name] for name in _TASK_ARGUMENT_IDS if name in bound.arguments}


def _bind_task_ids(
    task_id: str | None = None,
    task: Task | None = None,
    args: tuple | None = None,
    kwargs: dict | None = None,
    **extra: Any,
) -> None:
    """task_prerun receiver: the task's log lines carry its id, name, the request id it came with (or,
    run eagerly, the one already bound) and the order / leg ids among its arguments."""
    if task is None or task_id is None:
        return
    request_id = getattr(task.request, TASK_HEADER, None) or _IDS["request_id"].get()
    ids = {"request_id": request_id, "task_id": task_id, "task": task.name, "order_id": None, "leg_id": None}
    ids.update(_task_argument_ids(task, tuple(args or ()), dict(kwargs or {})))
    _task_tokens[task_id] = bind(**ids)


def _unbind_task_ids(task_id: str | None = None, **kwargs: Any) -> None:
    """task_postrun receiver: the ids go back to what they were before the task."""
    tokens = _task_tokens.pop(task_id, None) if task_id is not None else None
    if tokens:
        unbind(tokens)


def connect_celery_signals() -> None:
    """Connect the logging receivers to Celery's signals (core.celery calls this once)."""
    signals.setup_logging.connect(_setup_celery_logging, weak=False)
    signals.before_task_publish.connect(_add_request_id_header, weak=False)
    signals.task_prerun.connect(_bind_task_ids, weak=False)
    signals.task_postrun.connect(_unbind_task_ids, weak=False)
