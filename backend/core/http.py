"""Django's HTTP handling under ASGI in one hop: each request's sync work (the request_started signal, the
middleware chain and view, closing the response) runs in one call on a pool of HTTP threads, as a WSGI
server's threads would run it.

Django's own ASGIHandler runs the middleware chain in the event loop and hands every sync piece to a
thread of the request's own: each of the project's sync middlewares costs two hops (process_request and
process_response), the view one more, request_started's receivers and closing the response one each, and
the thread is new for every request, so is its database connection. Here the chain is loaded sync
(`load_middleware(is_async=False)`, as Django's WSGIHandler loads it) and a request's work runs in one
`sync_to_async` call on `WEB_HTTP_THREADS` reused threads. request_started and request_finished (sent by
closing the response) fire on that thread, as under WSGI, so their receivers (Django's
`close_old_connections`) keep each thread's database connection across requests for `DB_CONN_MAX_AGE`,
checked before and after every request. A streamed response is sent and closed as Django's handler does
it (cut short when the client goes away). WebSocket consumers are untouched: they never pass through here.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

_thread = threading.local()


def on_http_thread() -> bool:
    """Whether this thread is one of the HTTP threads (their connections live across requests)."""
    return getattr(_thread, "http", False)


def _mark_http_thread() -> None:
    _thread.http = True


class HttpHandler(ASGIHandler):
    """Django's ASGI handler whose requests run sync on `threads` reused threads (module docstring)."""

    def __init__(self, threads: int) -> None:
        base.BaseHandler.__init__(self)  # not ASGIHandler's: it loads the chain async
        self.load_middleware(is_async=False)
        self.executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="http", initializer=_mark_http_thread
        )
        self._respond_async = sync_to_async(self._respond, thread_sensitive=False, executor=self.executor)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        """ASGIHandler.handle, with the request's sync work in one hop (`_respond`)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await self._respond_async(scope, body_file)
            if response.streaming:
                await self._stream(response, receive, send)
            else:
                await self.send_response(response, send)  # sent to a client that left: daphne drops it
        finally:
            body_file.close()

    def _respond(self, scope: dict, body_file: IO[bytes]) -> HttpResponseBase:
        """What WSGIHandler.__call__ does between the server's read and write: request_started, the
        request (or the answer to a bad one), the response; a response already whole is closed here too,
        sending request_finished on this thread."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()
        return response

    async def _stream(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        """Send a streamed response as ASGIHandler.handle does: stopped when the client disconnects, then
        closed (on the request's own thread, as Django closes it)."""
        sending = asyncio.create_task(self.send_response(response, send))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait([listening, sending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, sending):
                task.cancel()
            await asyncio.gather(listening, sending, return_exceptions=True)
            await sync_to_async(response.close)()
