"""Going live, tried as an attacker would: tokens, WebSocket tickets, abuse limits, Origin checks.

REST over the full Django stack (DRF, real PostgreSQL, limits in the real Redis); WebSockets over the
full ASGI stack with Channels' communicator. Each test has its own limit counters (backend/conftest.py).
"""

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from core.asgi import application
from orders.tests import factories
from realtime import consumers

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 3


def sign_in(api: APIClient, username: str, password: str = factories.PASSWORD, **extra):
    return api.post("/api/auth/token/", {"username": username, "password": password}, format="json", **extra)


def authed(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


# --- tokens -----------------------------------------------------------------------------------------------


class TestTokens:
    def test_sign_in_gives_an_expiring_token_stored_only_as_a_hash(self, api, customer, settings):
        response = sign_in(api, "alice")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"token", "expiry"}
        expiry = timezone.datetime.fromisoformat(body["expiry"])
        expected = timezone.now() + timedelta(hours=settings.AUTH_TOKEN_TTL_HOURS)
        assert abs((expiry - expected).total_seconds()) < 60
        stored = AuthToken.objects.get(user=customer)
        assert body["token"] not in (stored.digest, stored.token_key)
        assert authed(body["token"]).get("/api/orders/").status_code == 200

    def test_each_sign_in_is_a_new_token_and_logout_revokes_only_the_one_used(self, api, customer):
        phone, laptop = sign_in(api, "alice").json()["token"], sign_in(api, "alice").json()["token"]
        assert phone != laptop
        assert authed(phone).post("/api/auth/logout/").status_code == 204
        assert authed(phone).get("/api/orders/").status_code == 401
        assert authed(laptop).get("/api/orders/").status_code == 200

    def test_logout_all_revokes_every_token_of_the_user(self, api, customer, other_customer):
        tokens = [sign_in(api, "alice").json()["token"] for _ in range(3)]
        theirs = sign_in(api, "bob").json()["token"]
        assert authed(tokens[0]).post("/api/auth/logout-all/").status_code == 204
        assert all(authed(token).get("/api/orders/").status_code == 401 for token in tokens)
        assert authed(theirs).get("/api/orders/").status_code == 200

    def test_an_expired_token_is_refused(self, customer):
        token = factories.token_for(customer)
        AuthToken.objects.filter(user=customer).update(expiry=timezone.now() - timedelta(seconds=1))
        assert authed(token).get("/api/orders/").status_code == 401

    def test_a_token_with_junk_appended_is_refused(self, customer):
        token = factories.token_for(customer)
        assert authed(token + "junk").get("/api/orders/").status_code == 401

    def test_signing_in_beyond_the_per_user_limit_revokes_the_oldest(self, api, customer, settings):
        settings.AUTH_TOKEN_LIMIT_PER_USER = 2
        first, second, third = (sign_in(api, "alice").json()["token"] for _ in range(3))
        assert authed(first).get("/api/orders/").status_code == 401
        assert authed(second).get("/api/orders/").status_code == 200
        assert authed(third).get("/api/orders/").status_code == 200

    def test_logout_needs_a_token(self, api):
        assert api.post("/api/auth/logout/").status_code == 401

    def test_token_lifetime_comes_from_the_environment(self, api, customer, settings):
        settings.AUTH_TOKEN_TTL_HOURS = 1
        settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(hours=1)}
        expiry = timezone.datetime.fromisoformat(sign_in(api, "alice").json()["expiry"])
        assert expiry < timezone.now() + timedelta(hours=1, minutes=1)


# --- sign-in and API limits -------------------------------------------------------------------------------


class TestSignInLimits:
    def test_guessing_from_one_address_is_throttled_with_retry_after(self, api, customer, settings):
        settings.THROTTLE_SIGNIN_PER_IP = "5/minute"
        answers = [sign_in(api, f"guess{index}", "wrong").status_code for index in range(5)]
        assert answers == [400] * 5
        refused = sign_in(api, "alice")  # even the right password: the address is over its rate
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
        other_address = sign_in(api, "alice", REMOTE_ADDR="10.1.2.3")
        assert other_address.status_code == 200

    def test_failures_for_one_username_lock_it_from_every_address(
        self, api, customer, other_customer, settings
    ):
        settings.THROTTLE_SIGNIN_FAILURES_PER_USERNAME = "3/15min"
        for index in range(3):
            assert sign_in(api, "alice", "wrong", REMOTE_ADDR=f"10.0.0.{index}").status_code == 400
        locked = sign_in(api, "alice", REMOTE_ADDR="10.0.0.99")
        assert locked.status_code == 429
        assert int(locked["Retry-After"]) > 60
        assert sign_in(api, "bob", REMOTE_ADDR="10.0.0.99").status_code == 200

    def test_a_successful_sign_in_clears_the_failures(self, api, customer, settings):
        settings.THROTTLE_SIGNIN_FAILURES_PER_USERNAME = "3/15min"
        for _ in range(2):
            sign_in(api, "alice", "wrong")
        assert sign_in(api, "alice").status_code == 200
        for _ in range(2):
            assert sign_in(api, "alice", "wrong").status_code == 400
        assert sign_in(api, "alice").status_code == 200

    def test_order_creation_is_limited_per_user(
        self, customer, other_customer, restaurants, client_for, settings
    ):
        settings.THROTTLE_ORDER_CREATE_PER_USER = "2/minute"
        dish = restaurants["melange"].dishes.first()
        body = {"items": [{"dish": dish.pk, "quantity": 1}], "delivery_address": "Khreshchatyk 1"}
        mine = client_for(customer)
        assert [mine.post("/api/orders/", body, format="json").status_code for _ in range(3)] == [
            201,
            201,
            429,
        ]
        assert mine.get("/api/orders/").status_code == 200  # reading is not creating
        assert client_for(other_customer).post("/api/orders/", body, format="json").status_code == 201

    def test_webhooks_are_limited_per_source(self, api, settings):
        settings.THROTTLE_WEBHOOK_PER_SOURCE = "3/minute"
        answers = [
            api.post("/webhooks/bueno/", b"{}", content_type="application/json").status_code for _ in range(4)
        ]
        assert answers[:3] == [401, 401, 401]  # unsigned, but counted
        assert answers[3] == 429

    def test_tickets_are_limited_per_user(self, customer, client_for, settings):
        settings.THROTTLE_TICKET_PER_USER = "2/minute"
        client = client_for(customer)
        assert [client.post("/api/realtime/ticket/").status_code for _ in range(3)] == [200, 200, 429]


# --- WebSockets: tickets, tokens, limits, Origin -----------------------------------------------------------


def run(scenario):
    async_to_sync(scenario)()


async def first_message(communicator: WebsocketCommunicator) -> dict:
    """Connect, then the first thing the server says: a close code or a frame."""
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    if not connected:
        return {"type": "refused"}
    message = await communicator.receive_output(timeout=TIMEOUT)
    if message["type"] == "websocket.close":
        return {"type": "closed", "code": message["code"]}
    return json.loads(message["text"])


def take_ticket(user) -> str:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    response = client.post("/api/realtime/ticket/")
    assert response.status_code == 200
    body = response.json()
    assert 0 < body["expires_in"] <= 60
    return body["ticket"]


@pytest.mark.usefixtures("relay")
class TestWebSocketAuth:
    def test_a_ticket_opens_one_socket_once(self, operator):
        ticket = take_ticket(operator)

        async def scenario():
            first = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            assert (await first_message(first))["type"] == "snapshot"
            await first.disconnect()
            again = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            assert await first_message(again) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}

        run(scenario)

    def test_an_expired_or_made_up_ticket_is_refused(self, operator, settings):
        settings.REALTIME_TICKET_SECONDS = 1
        ticket = take_ticket(operator)

        async def scenario():
            import asyncio

            await asyncio.sleep(1.5)
            late = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            assert await first_message(late) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}
            made_up = WebsocketCommunicator(application, "/ws/operators/?ticket=abc")
            assert await first_message(made_up) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}

        run(scenario)

    def test_a_ticket_decides_the_user_not_the_session(self, customer, operator):
        """A customer's ticket on the operators' socket is refused even from a browser signed in as staff."""
        ticket = take_ticket(customer)

        async def scenario():
            socket = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            assert await first_message(socket) == {"type": "closed", "code": consumers.CLOSE_FORBIDDEN}

        run(scenario)

    def test_a_token_in_the_url_is_refused_even_when_valid(self, operator):
        token = factories.token_for(operator)

        async def scenario():
            socket = WebsocketCommunicator(application, f"/ws/operators/?token={token}")
            assert await first_message(socket) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}

        run(scenario)

    def test_a_token_in_the_authorization_header_works_and_junk_does_not(self, operator):
        token = factories.token_for(operator)

        async def scenario():
            good = WebsocketCommunicator(
                application, "/ws/operators/", headers=[(b"authorization", f"Token {token}".encode())]
            )
            assert (await first_message(good))["type"] == "snapshot"
            await good.disconnect()
            junk = WebsocketCommunicator(
                application, "/ws/operators/", headers=[(b"authorization", f"Token {token}junk".encode())]
            )
            assert await first_message(junk) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}

        run(scenario)

    def test_a_revoked_token_no_longer_opens_sockets(self, operator):
        token = factories.token_for(operator)
        authed(token).post("/api/auth/logout/")

        async def scenario():
            socket = WebsocketCommunicator(
                application, "/ws/operators/", headers=[(b"authorization", f"Token {token}".encode())]
            )
            assert await first_message(socket) == {"type": "closed", "code": consumers.CLOSE_UNAUTHENTICATED}

        run(scenario)


@pytest.mark.usefixtures("relay")
class TestWebSocketLimits:
    def test_sockets_per_user_are_capped_and_a_closed_one_frees_its_place(self, operator, settings):
        settings.REALTIME_SOCKETS_PER_USER = 2
        headers = [(b"authorization", f"Token {factories.token_for(operator)}".encode())]

        async def scenario():
            first, second, third = (
                WebsocketCommunicator(application, "/ws/operators/", headers) for _ in range(3)
            )
            assert (await first_message(first))["type"] == "snapshot"
            assert (await first_message(second))["type"] == "snapshot"
            assert await first_message(third) == {"type": "closed", "code": consumers.CLOSE_RATE_LIMITED}
            await first.disconnect()
            fourth = WebsocketCommunicator(application, "/ws/operators/", headers)
            assert (await first_message(fourth))["type"] == "snapshot"
            await second.disconnect()
            await fourth.disconnect()

        run(scenario)

    def test_a_flood_of_frames_gets_one_warning_then_the_socket_is_closed(self, operator, settings):
        settings.REALTIME_FRAMES_PER_SECOND = 2
        settings.REALTIME_FRAME_BURST = 5
        headers = [(b"authorization", f"Token {factories.token_for(operator)}".encode())]

        async def scenario():
            socket = WebsocketCommunicator(application, "/ws/operators/", headers)
            assert (await first_message(socket))["type"] == "snapshot"
            for _ in range(50):
                await socket.send_to(text_data='{"type":"ping"}')
            answers = []
            while True:
                message = await socket.receive_output(timeout=TIMEOUT)
                if message["type"] == "websocket.close":
                    break
                answers.append(json.loads(message["text"]))
            assert message["code"] == consumers.CLOSE_RATE_LIMITED
            kinds = [answer.get("code") or answer["type"] for answer in answers if answer["type"] != "events"]
            assert kinds == ["pong"] * 5 + ["rate_limited"]

        run(scenario)

    def test_resumes_cost_more_than_pings(self, operator, settings):
        settings.REALTIME_FRAMES_PER_SECOND = 0.1
        settings.REALTIME_FRAME_BURST = 10
        headers = [(b"authorization", f"Token {factories.token_for(operator)}".encode())]

        async def scenario():
            socket = WebsocketCommunicator(application, "/ws/operators/", headers)
            assert (await first_message(socket))["type"] == "snapshot"
            for _ in range(3):
                await socket.send_to(text_data='{"type":"resume","after":0}')
            answers = [json.loads(await socket.receive_from(timeout=TIMEOUT)) for _ in range(3)]
            assert [answer["type"] for answer in answers] == ["events", "events", "error"]
            assert answers[2]["code"] == "rate_limited"
            await socket.disconnect()

        run(scenario)

    def test_a_client_that_slows_down_after_the_warning_stays_connected(self, operator, settings):
        settings.REALTIME_FRAMES_PER_SECOND = 50
        settings.REALTIME_FRAME_BURST = 3
        headers = [(b"authorization", f"Token {factories.token_for(operator)}".encode())]

        async def scenario():
            import asyncio

            socket = WebsocketCommunicator(application, "/ws/operators/", headers)
            assert (await first_message(socket))["type"] == "snapshot"
            for _ in range(4):
                await socket.send_to(text_data='{"type":"ping"}')
            answers = [json.loads(await socket.receive_from(timeout=TIMEOUT)) for _ in range(4)]
            assert answers[-1]["code"] == "rate_limited"
            await asyncio.sleep(0.2)  # the bucket fills up again
            for _ in range(3):
                await socket.send_to(text_data='{"type":"ping"}')
                assert json.loads(await socket.receive_from(timeout=TIMEOUT))["type"] == "pong"
            await socket.disconnect()

        run(scenario)


@pytest.mark.usefixtures("relay")
class TestOrigin:
    """A browser's Origin must match the socket's scheme, host and port, or be in CSRF_TRUSTED_ORIGINS."""

    @pytest.mark.parametrize(
        ("origin", "host", "allowed"),
        [
            (b"http://localhost:8000", b"localhost:8000", True),  # same origin
            (b"http://localhost:9999", b"localhost:8000", False),  # another port
            (b"https://localhost:8000", b"localhost:8000", False),  # another scheme (the socket is ws:)
            (b"http://evil.example", b"localhost:8000", False),
            (b"http://127.0.0.1:8000", b"localhost:8000", True),  # in CSRF_TRUSTED_ORIGINS
            (b"null", b"localhost:8000", False),
        ],
    )
    def test_origin(self, operator, origin, host, allowed, settings):
        settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:8000"]
        headers = [
            (b"authorization", f"Token {factories.token_for(operator)}".encode()),
            (b"origin", origin),
            (b"host", host),
        ]

        async def scenario():
            socket = WebsocketCommunicator(application, "/ws/operators/", headers)
            answer = await first_message(socket)
            assert (answer["type"] == "snapshot") is allowed, answer
            if allowed:
                await socket.disconnect()

        run(scenario)

    def test_no_origin_is_a_client_that_is_not_a_browser(self, operator):
        headers = [(b"authorization", f"Token {factories.token_for(operator)}".encode())]

        async def scenario():
            socket = WebsocketCommunicator(application, "/ws/operators/", headers)
            assert (await first_message(socket))["type"] == "snapshot"
            await socket.disconnect()

        run(scenario)


def test_expired_tokens_are_purged_and_live_ones_kept(customer):
    from core.tasks import purge_expired_tokens

    live = factories.token_for(customer)
    factories.token_for(customer)
    expired = AuthToken.objects.order_by("-created").first()
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - timedelta(minutes=1))
    assert purge_expired_tokens() == 1
    assert AuthToken.objects.count() == 1
    assert authed(live).get("/api/orders/").status_code == 200


@pytest.mark.slow
@pytest.mark.usefixtures("relay")
def test_the_whole_flow_over_the_network(operator, tmp_path):
    """Sign in, take a ticket, open a socket with it, on a real web process; what an attacker tries there."""
    import asyncio

    import httpx
    import websockets

    from realtime.tests.conftest import daphne_env, free_port, start_daphne, stop

    port = free_port()
    env = daphne_env(REALTIME_SOCKETS_PER_USER="2", REALTIME_FRAMES_PER_SECOND="2", REALTIME_FRAME_BURST="5")
    process = start_daphne(env, port, tmp_path / "daphne.log")
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"

    async def close_code(url: str, **kwargs) -> int:
        async with websockets.connect(url, **kwargs) as socket:
            try:
                while True:
                    await asyncio.wait_for(socket.recv(), timeout=5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code

    async def scenario(token: str, tickets: list[str]) -> None:
        header = {"Authorization": f"Token {token}"}
        assert await close_code(f"{ws}/ws/operators/?token={token}") == consumers.CLOSE_UNAUTHENTICATED
        async with websockets.connect(f"{ws}/ws/operators/?ticket={tickets[0]}") as first:
            assert json.loads(await first.recv())["type"] == "snapshot"
            url = f"{ws}/ws/operators/?ticket={tickets[0]}"
            assert await close_code(url) == consumers.CLOSE_UNAUTHENTICATED  # used
            async with websockets.connect(f"{ws}/ws/operators/", additional_headers=header) as second:
                assert json.loads(await second.recv())["type"] == "snapshot"
                url = f"{ws}/ws/operators/?ticket={tickets[1]}"
                assert await close_code(url) == consumers.CLOSE_RATE_LIMITED  # a third socket
                for _ in range(100):
                    await second.send('{"type":"ping"}')
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(second.recv(), timeout=5)
                assert closed.value.rcvd.code == consumers.CLOSE_RATE_LIMITED
            await first.send('{"type":"ping"}')  # the first socket was never disturbed
            assert json.loads(await asyncio.wait_for(first.recv(), timeout=5)) == {"type": "pong"}

    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            signed_in = http.post(
                "/api/auth/token/", json={"username": "olena", "password": factories.PASSWORD}
            )
            token = signed_in.json()["token"]
            header = {"Authorization": f"Token {token}"}
            tickets = [http.post("/api/realtime/ticket/", headers=header).json()["ticket"] for _ in range(2)]
            asyncio.run(scenario(token, tickets))
            assert http.post("/api/auth/logout/", headers=header).status_code == 204
            assert http.get("/api/orders/", headers=header).status_code == 401
    finally:
        stop(process)


class TestEveryDoorIsLimited:
    """The dashboard's login page and the admin's hash passwords too: the same limits hold there."""

    @pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
    def test_guessing_on_a_login_page_is_limited_per_address(self, client, operator, settings, path):
        settings.THROTTLE_SIGNIN_PER_IP = "3/minute"
        for index in range(3):
            page = client.post(path, {"username": f"guess{index}", "password": "wrong"})
            assert page.status_code == 200 and not page.wsgi_request.user.is_authenticated
        blocked = client.post(path, {"username": "olena", "password": factories.PASSWORD})
        assert not blocked.wsgi_request.user.is_authenticated  # the right password, refused unheard
        assert sign_in(APIClient(), "olena").status_code == 429  # the API shares the address's count

    def test_failures_on_the_login_page_count_for_the_api_too(self, client, customer, settings):
        settings.THROTTLE_SIGNIN_FAILURES_PER_USERNAME = "2/15min"
        for _ in range(2):
            client.post("/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR="10.9.9.9")
        assert sign_in(APIClient(), "alice").status_code == 429
        page = client.post("/login/", {"username": "alice", "password": factories.PASSWORD})
        assert not page.wsgi_request.user.is_authenticated

    def test_a_good_login_page_sign_in_still_works(self, client, operator):
        page = client.post("/login/", {"username": "olena", "password": factories.PASSWORD})
        assert page.status_code == 302
