"""Request ids through nginx (docker/nginx/default.conf): the client's sane X-Request-ID or nginx's own
reaches daphne, comes back on the response, nginx's own refusals included, and ends the access-log line.

Runs the real config with the fake daphne of test_docker.py."""

import re
import socket

from .test_docker import http_request, nginx_site  # noqa: F401 (a fixture, used by name)

NGINX_ID = re.compile(r"[0-9a-f]{32}")


def response_request_ids(answer: bytes) -> list[str]:
    head = answer.split(b"\r\n\r\n")[0].decode()
    return re.findall(r"(?im)^X-Request-ID: (.*?)\r?$", head)


def get(port: int, request_id: str | None = None) -> bytes:
    header = f"X-Request-ID: {request_id}\r\n" if request_id is not None else ""
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"
    return http_request(port, request.encode())


def test_a_sane_client_request_id_goes_through_and_is_logged(nginx_site, tmp_path):  # noqa: F811
    port, upstream = nginx_site
    answer = get(port, "client-trace:42")
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.requests[-1][1]["x-request-id"] == "client-trace:42"
    assert response_request_ids(answer) == ["client-trace:42"]
    assert (tmp_path / "logs" / "access.log").read_text().rstrip().endswith("req=client-trace:42")


def test_without_one_nginx_makes_the_id(nginx_site, tmp_path):  # noqa: F811
    port, upstream = nginx_site
    answer = get(port)
    request_id = upstream.requests[-1][1]["x-request-id"]
    assert NGINX_ID.fullmatch(request_id)
    assert response_request_ids(answer) == [request_id]
    assert (tmp_path / "logs" / "access.log").read_text().rstrip().endswith(f"req={request_id}")


def test_an_insane_client_request_id_is_replaced(nginx_site):  # noqa: F811
    port, upstream = nginx_site
    for insane in ("x" * 129, "two words", "a;b"):
        answer = get(port, insane)
        request_id = upstream.requests[-1][1]["x-request-id"]
        assert NGINX_ID.fullmatch(request_id), insane
        assert response_request_ids(answer) == [request_id]


def test_nginx_own_refusals_carry_the_request_id(nginx_site):  # noqa: F811
    port, upstream = nginx_site
    size = 2 * 1024 * 1024
    head = (
        f"POST /api/orders/ HTTP/1.1\r\nHost: x\r\nX-Request-ID: big-1\r\nContent-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    )
    # nginx answers from the headers, before any body byte; the first read holds the answer's head
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head.encode())
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert response_request_ids(answer) == ["big-1"]
    assert upstream.requests == []
