"""The project's URLs plus test views (`pytest.mark.urls`): one that fails, one that says where it ran."""

import threading

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

FAILURE_MESSAGE = "boom for the tests"


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(FAILURE_MESSAGE)


def where(request: HttpRequest) -> JsonResponse:
    """The thread that ran this view and its database connection's server process."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend_pid,) = cursor.fetchone()
    return JsonResponse({"thread": threading.current_thread().name, "backend_pid": backend_pid})


urlpatterns = [path("fail/", fail), path("where/", where), path("", include("core.urls"))]
