"""The project's URLs plus a view that fails, for tests of error responses (`pytest.mark.urls`)."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

FAILURE_MESSAGE = "boom for the tests"


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(FAILURE_MESSAGE)


urlpatterns = [path("fail/", fail), path("", include("core.urls"))]
