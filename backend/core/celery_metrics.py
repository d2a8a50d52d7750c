"""Metrics of the Celery processes: the worker's multiprocess directory, task metrics, exporter ports.

The worker's tasks run in prefork pool children, each with its own memory. prometheus-client's
multiprocess mode has every process write its values to files in PROMETHEUS_MULTIPROC_DIR, and the
worker's main process serves their sum (MultiProcessCollector) on METRICS_WORKER_PORT. The mode is chosen
when prometheus_client is first imported, so `prepare()` runs from core.celery before anything imports
it (this module imports it only inside `install()`). Each worker start gets a directory of its own, made
fresh under the system's temporary directory (TMPDIR) and removed at shutdown: no value of an earlier run,
or of another worker on the same host, is ever counted.

Beat serves its own process's registry on METRICS_BEAT_PORT (`beat_init`).
"""

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import click
from celery import signals

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DIRECTORY_PREFIX = "liveops-worker-metrics-"


def starting_worker() -> bool:
    """Whether this process is `celery worker` starting up. Celery's command line imports the app (and so
    core.celery) while its main command runs, when click already knows which subcommand follows."""
    context = click.get_current_context(silent=True)
    return context is not None and context.invoked_subcommand == "worker"


def prepare() -> str | None:
    """In a starting worker: a fresh, empty multiprocess directory in PROMETHEUS_MULTIPROC_DIR, which the
    pool children inherit. Elsewhere nothing (None): web, beat and the relay count in memory.

    Raises RuntimeError when prometheus_client is loaded already: its values would stay in memory, and
    the exporter would show none of the children's.
    """
    if not starting_worker():
        return None
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before core.celery_metrics.prepare()")
    directory = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
    os.environ[MULTIPROC_ENV] = directory
    return directory


def install() -> None:
    """Connect the receivers of task metrics and exporters (core.celery calls this once, after prepare())."""
    from . import metrics  # here, after prepare(): prometheus_client loads in the mode prepare() chose

    signals.task_prerun.connect(metrics.task_started, weak=False)
    signals.task_postrun.connect(metrics.task_ended, weak=False)
    signals.task_failure.connect(metrics.task_failed, weak=False)
    signals.task_retry.connect(metrics.task_retried, weak=False)
    signals.worker_ready.connect(metrics.serve_worker, weak=False)
    signals.worker_process_shutdown.connect(metrics.worker_child_exited, weak=False)
    signals.worker_shutdown.connect(_remove_directory, weak=False)
    signals.beat_init.connect(metrics.serve_beat, weak=False)


def _remove_directory(**kwargs: Any) -> None:
    """worker_shutdown (main process): the directory was this run's only."""
    directory = os.environ.get(MULTIPROC_ENV, "")
    if os.path.basename(directory).startswith(DIRECTORY_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)
