"""Deliveries from released events, lanes in seq order, retries, refusals, disabling: against a real
receiver over HTTP, sending in this process (services.deliver_lane), with the queue recorded."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from orders import services as order_services
from orders.models import EventMark, OrderEvent
from orders.tests import factories
from webhooks import services, signing
from webhooks.models import TEST_EVENT, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[int, int | None, float | None]]:
    """What would go to the Celery queue: (endpoint, order, countdown) per lane."""
    calls: list[tuple[int, int | None, float | None]] = []

    def record(lanes, countdown=None):
        calls.extend((endpoint_id, order_id, countdown) for endpoint_id, order_id in lanes)

    monkeypatch.setattr(services, "_enqueue_lanes", record)
    return calls


@pytest.fixture
def order(restaurants, customer):
    return factories.make_order(customer, *restaurants.values())


def release_all(django_capture_on_commit_callbacks) -> list[OrderEvent]:
    events = list(OrderEvent.objects.order_by("seq"))
    with django_capture_on_commit_callbacks(execute=True):
        services.deliveries_for_released(events)
    return events


def endpoint_for(receiver, path="/ok", events=("*",)) -> WebhookEndpoint:
    """An endpoint subscribed since before the test's order was placed."""
    endpoint = services.endpoint_create(url=receiver.url(path), events=list(events))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(created_at=timezone.now() - timedelta(hours=1))
    endpoint.refresh_from_db()
    return endpoint


def test_released_events_become_one_delivery_per_subscribed_endpoint(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    everything = endpoint_for(receiver)
    created_only = endpoint_for(receiver, events=["order.created"])
    events = release_all(django_capture_on_commit_callbacks)

    assert WebhookDelivery.objects.filter(endpoint=everything).count() == len(events)
    assert list(WebhookDelivery.objects.filter(endpoint=created_only).values_list("type", flat=True)) == [
        "order.created"
    ]
    assert sorted(enqueued) == sorted([(everything.pk, order.pk, None), (created_only.pk, order.pk, None)])
    assert EventMark.objects.get(name=services.MARK).seq == events[-1].seq

    # A relay taking over hands the same events out again: no second delivery
    release_all(django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.filter(endpoint=everything).count() == len(events)


def test_an_endpoint_gets_only_events_after_it_was_created(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    OrderEvent.objects.update(at=timezone.now() - timedelta(hours=2))
    endpoint_for(receiver)
    release_all(django_capture_on_commit_callbacks)
    assert not WebhookDelivery.objects.exists()


def test_the_body_is_the_public_order_signed_with_the_endpoint_secret(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(receiver)
    release_all(django_capture_on_commit_callbacks)
    sent = services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)

    assert sent == WebhookDelivery.objects.count() >= 1
    first = receiver.at("/ok")[0]
    assert first.signed_by(endpoint.secret)
    assert not first.signed_by("whsec_someone-else")
    body = first.json
    delivery = WebhookDelivery.objects.get(pk=body["id"])
    assert body["type"] == "order.created" and body["seq"] == delivery.seq
    assert first.headers["Liveops-Delivery"] == body["id"]
    assert body["data"]["order"]["id"] == order.pk
    # the public shape: no provider legs, failure text, alerts or customer contact
    assert not {"legs", "alerts", "failure_reason", "customer"} & set(body["data"]["order"])
    assert delivery.status == "delivered" and delivery.tries.get().status_code == 200


def test_a_lane_sends_in_seq_order_and_waits_while_its_head_fails(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    order_services.order_cancel(order_id=order.pk, actor=order.customer, reason="changed my mind")
    endpoint = endpoint_for(receiver, "/down")
    release_all(django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.count() >= 2

    assert services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk) == 1
    head = WebhookDelivery.objects.order_by("seq").first()
    assert head.status == "pending" and head.attempts == 1 and "503" in head.last_error
    assert head.next_attempt_at > timezone.now()
    assert len(receiver.at("/down")) == 1, "the later events wait behind the failing head"
    assert enqueued[-1][2] is not None and 0 < enqueued[-1][2] <= 10, "retried after a backoff"
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None and endpoint.active

    # Not due yet: nothing is sent
    assert services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk) == 0
    # The receiver recovers; once due, the lane drains in seq order
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url("/ok"))
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert (
        services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk) == WebhookDelivery.objects.count()
    )
    seqs = [request.json["seq"] for request in receiver.at("/ok")]
    assert seqs == sorted(seqs) and len(seqs) == WebhookDelivery.objects.count()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_a_refusal_fails_the_delivery_at_once_and_the_lane_moves_on(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    order_services.order_cancel(order_id=order.pk, actor=order.customer, reason="")
    endpoint = endpoint_for(receiver, "/gone")
    release_all(django_capture_on_commit_callbacks)
    count = WebhookDelivery.objects.count()
    assert services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk) == count
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"failed"}
    assert WebhookDelivery.objects.first().last_error.startswith("HTTP 410: this endpoint is gone")


def test_redirects_are_not_followed(receiver, order, enqueued, django_capture_on_commit_callbacks):
    endpoint = endpoint_for(receiver, "/redirect", events=["order.created"])
    release_all(django_capture_on_commit_callbacks)
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and "redirects are not followed" in delivery.last_error
    assert receiver.at("/ok") == []


def test_a_slow_receiver_times_out_and_is_retried(
    receiver, order, enqueued, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.slow_seconds = 1.5
    endpoint = endpoint_for(receiver, "/slow", events=["order.created"])
    release_all(django_capture_on_commit_callbacks)
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.last_error == "no answer within 0.3 s"
    attempt = delivery.tries.get()
    assert attempt.status_code is None and attempt.next_retry_at == delivery.next_attempt_at


def test_only_a_small_part_of_the_answer_is_read(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(receiver, "/big", events=["order.created"])
    release_all(django_capture_on_commit_callbacks)
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    assert WebhookDelivery.objects.get().status == "delivered"


def test_private_addresses_are_refused_unless_allowed(
    receiver, order, enqueued, settings, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(receiver, events=["order.created"])
    named = services.endpoint_create(url=f"http://localhost:{receiver.port}/ok", events=["order.created"])
    WebhookEndpoint.objects.filter(pk=named.pk).update(created_at=endpoint.created_at)
    release_all(django_capture_on_commit_callbacks)
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    for target in (endpoint, named):
        services.deliver_lane(endpoint_id=target.pk, order_id=order.pk)
        delivery = WebhookDelivery.objects.get(endpoint=target)
        assert delivery.status == "failed" and delivery.last_error.startswith("refused:"), delivery.last_error
    assert receiver.received == []

    for url in (
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://100.100.100.200/hook",
    ):
        with pytest.raises(ValidationError):
            services.validate_url(url)
    services.validate_url("http://93.184.216.34/hook")  # a public address


def test_https_is_required_when_configured(settings):
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    with pytest.raises(ValidationError):
        services.validate_url("http://partner.example.com/hook")
    services.validate_url("https://partner.example.com/hook")
    with pytest.raises(ValidationError):
        services.validate_url("https://user:pass@partner.example.com/hook")


def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    order_services.order_cancel(order_id=order.pk, actor=order.customer, reason="")
    endpoint = endpoint_for(receiver, "/down")
    release_all(django_capture_on_commit_callbacks)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(hours=25))

    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    endpoint.refresh_from_db()
    assert not endpoint.active and endpoint.disabled_at is not None
    assert "HTTP 503" in endpoint.disabled_reason
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"failed"}
    # Disabled: new events are not delivered to it
    before = WebhookDelivery.objects.count()
    OrderEvent.objects.create(order=order, type="order.located", source="system")
    release_all(django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.count() == before

    # Turned on again, its failures are forgotten
    services.endpoint_update(endpoint=endpoint, active=True)
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.failing_since is None and endpoint.disabled_reason == ""


def test_a_delivery_failing_past_the_window_is_given_up(
    receiver, order, enqueued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(receiver, "/down", events=["order.created"])
    release_all(django_capture_on_commit_callbacks)
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=25))
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    assert WebhookDelivery.objects.get().status == "failed"


def test_redelivery_sends_the_same_id_again(receiver, order, enqueued, django_capture_on_commit_callbacks):
    endpoint = endpoint_for(receiver, events=["order.created"])
    release_all(django_capture_on_commit_callbacks)
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    delivery = WebhookDelivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.delivery_redeliver(delivery=delivery)
    assert enqueued[-1] == (endpoint.pk, order.pk, None)
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    ids = [request.json["id"] for request in receiver.at("/ok")]
    assert ids == [str(delivery.pk), str(delivery.pk)]
    assert WebhookDelivery.objects.get().tries.count() == 2


def test_a_test_event_reaches_even_a_disabled_endpoint(
    receiver, enqueued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(receiver)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False)
    with django_capture_on_commit_callbacks(execute=True):
        delivery = services.endpoint_send_test(endpoint=endpoint)
    assert enqueued == [(endpoint.pk, None, None)]
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=None)
    (request,) = receiver.at("/ok")
    assert request.json["type"] == TEST_EVENT and request.json["id"] == str(delivery.pk)
    assert request.signed_by(endpoint.secret)


def test_the_sweep_finds_due_heads_only(receiver, order, enqueued, django_capture_on_commit_callbacks):
    order_services.order_cancel(order_id=order.pk, actor=order.customer, reason="")
    endpoint = endpoint_for(receiver, "/down")
    release_all(django_capture_on_commit_callbacks)
    assert services.due_lanes() == [(endpoint.pk, order.pk)]
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    assert services.due_lanes() == [], "the head waits for its retry; the events behind it do not count"
    WebhookDelivery.objects.filter(status="pending").update(next_attempt_at=timezone.now())
    assert services.due_lanes() == [(endpoint.pk, order.pk)]
    WebhookDelivery.objects.update(leased_until=timezone.now() + timedelta(minutes=1))
    assert services.due_lanes() == [], "a lane a worker holds is left to it"


def test_backoff_doubles_with_jitter_up_to_the_cap(settings):
    settings.WEBHOOK_BACKOFF_SECONDS = 10
    settings.WEBHOOK_MAX_BACKOFF_SECONDS = 3600
    for attempts, full in ((1, 10), (2, 20), (5, 160), (20, 3600)):
        delays = [services.backoff_seconds(attempts) for _ in range(50)]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(set(delays)) > 1
    assert services.backoff_seconds(1, retry_after=120) >= 120


def test_signatures_verify_only_the_signed_body_within_the_window():
    secret = signing.new_secret()
    body = b'{"id":"x"}'
    header = signing.header_value(secret, body, timestamp=1_000_000)
    assert signing.verify(secret, body, header, now=1_000_010)
    assert not signing.verify(secret, body + b" ", header, now=1_000_010)
    assert not signing.verify(secret, body, header, now=1_000_000 + signing.TOLERANCE_SECONDS + 1)
    assert not signing.verify(secret, body, "t=abc,v1=00", now=1_000_000)
    assert not signing.verify(secret, body, "", now=1_000_000)


def test_the_readme_verification_snippet_accepts_our_signatures_only():
    """The ten lines partners copy from the README verify what the sender signs."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("**Verifying the signature.**", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    verify = namespace["verify"]
    secret, body = signing.new_secret(), b'{"id":"1","type":"order.status"}'
    header = signing.header_value(secret, body)
    assert verify(secret, body, header)
    assert not verify(secret, body + b"x", header)
    assert not verify("whsec_other", body, header)
    assert not verify(secret, body, signing.header_value(secret, body, timestamp=1_000_000))
    assert not verify(secret, body, "garbage")


def test_events_a_failed_batch_left_behind_are_taken_up_by_the_next(
    receiver, order, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    """The relay gave up on a batch (the subscriber kept failing): the next one finds the mark behind."""
    order_services.order_cancel(order_id=order.pk, actor=order.customer, reason="")
    endpoint_for(receiver)
    events = list(OrderEvent.objects.order_by("seq"))
    assert len(events) >= 3
    EventMark.objects.create(name=services.MARK, seq=events[0].seq - 1)
    monkeypatch.setattr(services, "CATCH_UP_LIMIT", 1)

    with django_capture_on_commit_callbacks(execute=True):
        services.deliveries_for_released(events[-1:])  # events[:-1] never reached the subscriber
    assert list(WebhookDelivery.objects.values_list("seq", flat=True)) == [events[0].seq], "one at a time"
    assert EventMark.objects.get(name=services.MARK).seq == events[0].seq

    for _ in events:
        services.deliveries_for_released(events[-1:])
    assert sorted(WebhookDelivery.objects.values_list("seq", flat=True)) == [event.seq for event in events]
    assert EventMark.objects.get(name=services.MARK).seq == events[-1].seq
