"""Customer emails (orders.notifications): what each carries, the tracking link that opens the order, and
that each is sent once."""

import base64
import json
import re
from datetime import timedelta
from smtplib import SMTPException

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.test import Client
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext

from core.celery import app as celery_app
from orders import alerts, notifications, services, tasks
from orders.models import Dish, Order, TrackingLink
from orders.tests import factories

pytestmark = pytest.mark.django_db

FINAL_SUBJECTS = {
    "delivered": "Your order #{id} has been delivered",
    "failed": "We could not complete your order #{id}",
    "cancelled": "Your order #{id} was cancelled",
}


class FailingBackend(BaseEmailBackend):
    """An SMTP server that refuses every message."""

    def send_messages(self, email_messages):
        raise SMTPException("421 try again later")


@pytest.fixture
def order(customer, restaurants):
    customer.email = "alice@example.com"
    customer.save()
    return factories.make_order(customer, restaurants["melange"])


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def courier(db):
    return factories.make_courier("vasyl")


def link_in(email) -> str:
    """The tracking link's path, found as the same absolute URL in the text and the HTML part."""
    pattern = re.escape(settings.PUBLIC_URL) + r"(/t/[A-Za-z0-9_-]+/)"
    [url] = set(re.findall(pattern, email.body))
    [(html, mimetype)] = email.alternatives
    assert mimetype == "text/html"
    assert set(re.findall(pattern, html)) == {url}, "the HTML part links to the same page"
    return url


def opened_order(path: str) -> int:
    """The order the tracking page of `path` shows, for someone not signed in."""
    response = Client().get(path)
    assert response.status_code == 200
    return response.context["order"].pk


def local(moment) -> str:
    """`moment` as the email writes it, in the site's language (whatever an earlier request activated)."""
    with translation.override(settings.LANGUAGE_CODE):
        return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def set_status(order: Order, status: str, **fields) -> None:
    Order.objects.filter(pk=order.pk).update(status=status, **fields)


def test_a_message_queued_before_the_relay_sent_follow_ups_is_still_worked(order, eager):
    """orders.order_created: what web processes sent before this release, kept for one release."""
    tasks.order_created.delay(order.pk, True, False)
    assert [email.subject for email in mail.outbox] == [f"We received your order #{order.pk}"]


def test_received_email_lists_the_order_and_links_to_it(
    customer, restaurants, eager, django_capture_on_commit_callbacks
):
    customer.email = "alice@example.com"
    customer.save()
    dishes = [factories.dish(restaurants["melange"], 1), factories.dish(restaurants["bueno"], 0)]
    eta = timezone.now() + timedelta(hours=3)  # later than the kitchens' lead: nothing is sent to them now
    with django_capture_on_commit_callbacks(execute=True):
        order = services.order_create(
            customer=customer,
            items=[
                services.ItemInput(dish=dishes[0], quantity=2),
                services.ItemInput(dish=dishes[1], quantity=1),
            ],
            delivery_address="Sahaidachnoho St, 10, Kyiv",
            eta=eta,
        )
    assert mail.outbox == [], "nothing is sent until the relay releases the order"
    factories.release(order)
    [email] = mail.outbox
    assert email.to == ["alice@example.com"]
    assert str(order.pk) in email.subject and email.subject != FINAL_SUBJECTS["delivered"].format(id=order.pk)
    assert f"{dishes[0].name} × 2" in email.body and f"{dishes[1].name} × 1" in email.body
    assert order.total == 2 * 15000 + 10000 and "400.00" in email.body
    assert order.delivery_address in email.body
    assert local(alerts.order_promised_at(order)) in email.body
    link = TrackingLink.objects.get()
    assert (link.order_id, link.created_by_id) == (order.pk, customer.pk)
    assert f"{local(link.expires_at)}" in email.body, "the email says until when the link works"
    assert opened_order(link_in(email)) == order.pk
    assert notifications.send_order_email(order_id=order.pk) is False, "a repeated task sends nothing"


def test_received_email_is_sent_when_the_kitchens_took_the_order_first(order):
    set_status(order, "cooking")  # the submit task ran before the email task
    assert notifications.send_order_email(order_id=order.pk) is True
    assert notifications.send_order_email(order_id=order.pk) is False
    [email] = mail.outbox
    assert str(order.pk) in email.subject and order.delivery_address in email.body


@pytest.mark.parametrize("status", ["scheduled", "delivering", "delivered", "failed", "cancelled"])
def test_every_status_email_carries_a_link_that_opens_its_order(order, status, restaurants, customer):
    other = factories.make_order(customer, restaurants["bueno"])  # a link must not open just any order
    set_status(order, status)
    assert notifications.send_order_email(order_id=order.pk) is True
    [email] = mail.outbox
    link = TrackingLink.objects.get()
    assert (link.order_id, link.created_by_id) == (order.pk, customer.pk)
    assert local(link.expires_at) in email.body
    assert opened_order(link_in(email)) == order.pk != other.pk


@pytest.mark.parametrize("status", FINAL_SUBJECTS)
def test_final_status_is_emailed_once(order, status):
    set_status(order, status, failure_reason="Melange down", notified_status="scheduled")
    assert notifications.send_order_email(order_id=order.pk) is True
    assert notifications.send_order_email(order_id=order.pk) is False, "a repeated task sends nothing"
    [email] = mail.outbox
    assert (email.to, email.subject) == (["alice@example.com"], FINAL_SUBJECTS[status].format(id=order.pk))
    assert "Melange down" not in email.body, "the cause is the operators' (orders.disclosure)"
    assert TrackingLink.objects.count() == 1


def test_each_status_of_a_journey_is_emailed_once(order):
    sent = []
    for status in ["scheduled", "submitted", "cooking", "courier_search", "delivering", "delivered"]:
        set_status(order, status)
        for _attempt in range(2):  # every task delivered twice
            sent.append(notifications.send_order_email(order_id=order.pk))
    assert sent == [True, False, False, False, False, False, False, False, True, False, True, False]
    assert len(mail.outbox) == TrackingLink.objects.count() == 3


def test_delivering_email_names_the_courier(order, courier):
    set_status(order, "delivering", courier=courier, notified_status="scheduled")
    assert notifications.send_order_email(order_id=order.pk) is True
    [email] = mail.outbox
    assert str(order.pk) in email.subject
    assert "Vasyl" in email.body and "Vasyl" in email.alternatives[0][0]


def test_delivering_email_without_a_known_courier_is_still_sent(order, courier):
    set_status(order, "delivering")
    assert notifications.send_order_email(order_id=order.pk) is True
    assert "Vasyl" not in mail.outbox[0].body


def test_html_part_escapes_what_customers_and_restaurants_typed(customer, restaurants):
    customer.email = "alice@example.com"
    customer.save()
    dish = Dish.objects.create(
        restaurant=restaurants["melange"], name='Borscht <img src=x onerror="x()">', price=500
    )
    order = services.order_create(
        customer=customer,
        items=[services.ItemInput(dish=dish, quantity=1)],
        delivery_address="<script>alert('pwned')</script> Khreshchatyk 1",
    )
    assert notifications.send_order_email(order_id=order.pk) is True
    [email] = mail.outbox
    [(html, _mimetype)] = email.alternatives
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
    assert order.delivery_address in email.body, "the plain text part shows the address as typed"


def test_a_failed_send_gives_the_claim_back_for_the_retry(order, settings):
    set_status(order, "delivering", notified_status="scheduled")
    settings.EMAIL_BACKEND = f"{__name__}.FailingBackend"
    with pytest.raises(SMTPException):
        notifications.send_order_email(order_id=order.pk)
    order.refresh_from_db()
    assert order.notified_status == "scheduled", "the received email stays sent"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert notifications.send_order_email(order_id=order.pk) is True
    assert notifications.send_order_email(order_id=order.pk) is False
    assert len(mail.outbox) == 1


def test_active_order_and_missing_address_send_nothing(order, customer):
    set_status(order, "cooking", notified_status="scheduled")
    assert notifications.send_order_email(order_id=order.pk) is False
    customer.email = ""
    customer.save()
    for status in ["scheduled", "delivering", "delivered"]:
        set_status(order, status, notified_status="")
        assert notifications.send_order_email(order_id=order.pk) is False
    assert notifications.send_order_email(order_id=999999) is False
    assert mail.outbox == []
    assert not TrackingLink.objects.exists(), "no link is made for an email that is not sent"


def test_customer_reads_the_email_in_the_site_language(order, settings):
    settings.LANGUAGE_CODE = "uk"
    set_status(order, "delivered", notified_status="scheduled")
    assert notifications.send_order_email(order_id=order.pk) is True
    [email] = mail.outbox
    expires = timezone.localtime(TrackingLink.objects.get().expires_at)
    with translation.override("uk"):
        ukrainian = date_format(expires, "DATETIME_FORMAT")
        subject = gettext("Your order #%(id)s has been delivered") % {"id": order.pk}
    with translation.override("en"):
        assert date_format(expires, "DATETIME_FORMAT") != ukrainian
    assert ukrainian in email.body and ukrainian in email.alternatives[0][0]
    assert email.subject == subject
    assert '<html lang="uk">' in email.alternatives[0][0]


def test_cancel_emails_after_commit(order, operator, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.order_cancel(order_id=order.pk, actor=operator)
    assert mail.outbox == [], "nothing is sent before the commit"
    for callback in callbacks:
        callback()
    assert [email.subject for email in mail.outbox] == [f"Your order #{order.pk} was cancelled"]


def test_operator_sending_the_courier_emails_the_customer(
    order, operator, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.order_override_status(
            order_id=order.pk, actor=operator, to_status="delivering", reason="courier left"
        )
    [email] = mail.outbox
    assert opened_order(link_in(email)) == order.pk
    order.refresh_from_db()
    assert order.notified_status == "delivering"


def test_a_poll_batch_emails_its_customers_from_one_task(order, customer, restaurants, settings):
    """orders.tasks.follow_up: the one message of a batch sends each email; one the server refuses is
    handed to send_order_email (a message to the broker), which retries it on its own."""
    other = factories.make_order(customer, restaurants["bueno"])
    for each in (order, other):
        set_status(each, "delivering")
    tasks.follow_up(due=[], notify=[order.pk, other.pk])
    subjects = [email.subject for email in mail.outbox]
    assert [f"#{order.pk}" in subjects[0], f"#{other.pk}" in subjects[1]] == [True, True], subjects
    mail.outbox.clear()
    for each in (order, other):
        set_status(each, "delivered")
    settings.EMAIL_BACKEND = f"{__name__}.FailingBackend"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = celery_app.conf.task_default_queue
    before = broker.llen(queue)
    tasks.follow_up(due=[], notify=[order.pk, other.pk])
    assert mail.outbox == []
    sent = [json.loads(message) for message in broker.lrange(queue, 0, broker.llen(queue) - before - 1)]
    retried = sorted(json.loads(base64.b64decode(message["body"]))[0][0] for message in sent)
    assert retried == [order.pk, other.pk]
    assert {message["headers"]["task"] for message in sent} == {"orders.send_order_email"}
