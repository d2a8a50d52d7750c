"""The Celery application; configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery

from . import celery_metrics, liveness
from .logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# A starting worker gets its metrics directory before anything imports prometheus_client (core.celery_metrics)
celery_metrics.prepare()

app = Celery("liveops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Workers and beat log through settings.LOGGING (Celery's own lines included); tasks carry request ids
connect_celery_signals()
# Beat and the workers record their poll-tick heartbeats; the worker refreshes its heartbeat file
liveness.install(app)
# Task metrics in the workers; the worker's and beat's metrics exporters
celery_metrics.install()
