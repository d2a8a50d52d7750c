"""Every HTTP request gets an id: the client's (or nginx's) X-Request-ID when it is sane, else a new one.

The id is bound for the request's log lines (core.logs), travels with the tasks the request enqueues,
and comes back as X-Request-ID on every response, error pages included: a user's report, an nginx access
log line, the web process's lines and the worker's can all be matched by it.
"""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponseBase

from .logs import REQUEST_ID_HEADER, bind, sane_request_id

Handler = Callable[[HttpRequest], HttpResponseBase]
AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class RequestIdMiddleware:
    """First in MIDDLEWARE, so the ids are bound around everything else, and the header is on every
    response the others produce (Django turns exceptions into responses inside each layer).

    The ids stay bound after the response leaves this middleware: Django's handler logs a 4xx/5xx answer
    ("Bad Request: /api/...") after the middleware chain, and that line belongs to the request too. They
    end with the request (`end_request_ids`, on request_finished), so a thread that served it (WSGI, the
    test client) does not log on under its id. Binding every id at the start, not just the request's,
    drops whatever a previous request left.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler | AsyncHandler) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        request_id = self._start(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id = self._start(request)
        response = await self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    @staticmethod
    def _start(request: HttpRequest) -> str:
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        bind(request_id=request_id, order_id=None, leg_id=None, task_id=None, task=None)
        return request_id


def end_request_ids(**kwargs: object) -> None:
    """request_finished receiver: the request's ids end with it. Plain sets, not token resets: under ASGI
    this runs in a worker thread's copy of the request's context (asgiref copies it back afterwards)."""
    bind(request_id=None, order_id=None, leg_id=None, task_id=None, task=None)


request_finished.connect(end_request_ids, dispatch_uid="core.request_ids.end_request_ids")
