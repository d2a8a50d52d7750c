"""Django's HTTP handling under ASGI in one hop: each request's middleware and view run in one call on a
pool of HTTP threads, as a WSGI server's threads would run them.

Django's own ASGIHandler runs the middleware chain in the event loop and hands every sync piece to a
thread of the request's own: each of the project's sync middlewares costs two hops (process_request and
process_response), the view one more, and the thread is new for every request, so is its database
connection. Here the chain is loaded sync (`load_middleware(is_async=False)`, as Django's WSGIHandler
loads it) and the whole of it runs in one `sync_to_async` call on `WEB_HTTP_THREADS` reused threads.
Each keeps its database connection across requests, as a WSGI thread does, checked before and after
every request as Django's request_started and request_finished receivers check it (those signals still
fire, but in other threads). WebSocket consumers are untouched: they never pass through here.
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries
from django.http import HttpRequest, HttpResponseBase


class HttpHandler(ASGIHandler):
    """Django's ASGI handler whose requests run sync on `threads` reused threads (module docstring)."""

    def __init__(self, threads: int) -> None:
        base.BaseHandler.__init__(self)  # not ASGIHandler's: it loads the chain async
        self.load_middleware(is_async=False)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self._respond_async = sync_to_async(self._respond, thread_sensitive=False, executor=self.executor)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await self._respond_async(request)

    def _respond(self, request: HttpRequest) -> HttpResponseBase:
        # What request_started's and request_finished's receivers do for a WSGI thread, on this thread
        reset_queries()
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()
