"""Alerts decided on the server (orders.alerts), their API, and where the services raise and clear them."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import alerts, services
from orders.models import Alert, Leg, Order, OrderEvent, Restaurant
from orders.status import OrderStatus
from orders.sync import leases
from orders.tests import factories

pytestmark = pytest.mark.django_db

Kind = Alert.Kind


@pytest.fixture
def order(customer, restaurants) -> Order:
    return factories.make_order(customer, restaurants["melange"], restaurants["bueno"])


def alert_events(order: Order) -> list[tuple[str, str]]:
    events = order.events.filter(type__startswith="alert.").order_by("seq")
    return [(event.type, event.alert.kind) for event in events]


def age(order: Order, minutes: float) -> None:
    """Pretend the order was placed (and last moved) `minutes` ago."""
    then = timezone.now() - timedelta(minutes=minutes)
    Order.objects.filter(pk=order.pk).update(created_at=then)
    order.events.update(at=then)


class TestRaiseAndClear:
    def test_raised_once_and_recorded(self, order):
        for _ in range(2):
            alerts.raise_alert(order=order, kind=Kind.LATE, detail="Late 5 min", source="system")
        assert order.alerts.count() == 1
        assert alert_events(order) == [("alert.raised", "late")]

    def test_one_open_alert_per_leg(self, order):
        melange, bueno = order.legs.order_by("id")
        for leg in (melange, bueno, melange):
            alerts.raise_alert(order=order, kind=Kind.PROVIDER_FAILING, detail="500", leg=leg, source="poll")
        assert order.alerts.count() == 2

    def test_cleared_and_raised_again_later(self, order):
        alerts.raise_alert(order=order, kind=Kind.STUCK, detail="No progress", source="system")
        assert alerts.clear_alerts(order=order, kinds=[Kind.STUCK], source="poll") == 1
        alerts.raise_alert(order=order, kind=Kind.STUCK, detail="No progress again", source="system")
        assert list(order.alerts.order_by("id").values_list("cleared_at", flat=True))[1] is None
        assert alert_events(order) == [
            ("alert.raised", "stuck"),
            ("alert.cleared", "stuck"),
            ("alert.raised", "stuck"),
        ]


class TestServicesRaiseAndClear:
    def test_a_failing_provider_raises_at_once_and_an_answer_clears(self, order):
        leg = order.legs.get(provider="bueno")
        services.leg_record_failure(leg_id=leg.pk, error="bueno answered 500 to POST /")
        [alert] = order.alerts.all()
        assert (alert.kind, alert.leg_id, alert.is_open) == (Kind.PROVIDER_FAILING, leg.pk, True)
        assert "Bueno" in alert.detail and "500" in alert.detail
        services.leg_record_failure(leg_id=leg.pk, error="bueno answered 500 to POST /")
        assert order.alerts.count() == 1, "raised once while it keeps failing"
        leases.legs_clear_failures(leg_ids=[leg.pk])
        assert not order.alerts.filter(cleared_at__isnull=True).exists()

    def test_one_leg_answering_does_not_clear_another_legs_alert(self, order):
        melange, bueno = order.legs.order_by("id")
        services.leg_record_failure(leg_id=bueno.pk, error="timeout")
        leases.leg_clear_failure(leg_id=melange.pk)
        assert order.alerts.get().is_open

    def test_a_failed_order_raises_failed_and_a_retry_clears_it(self, order, operator, settings):
        settings.PROVIDER_FAILURE_DEADLINE_SECONDS = 0.001
        leg = order.legs.get(provider="melange")
        services.leg_record_failure(leg_id=leg.pk, error="timeout")
        services.leg_record_failure(leg_id=leg.pk, error="timeout")
        order.refresh_from_db()
        assert order.status == OrderStatus.FAILED
        open_kinds = set(order.alerts.filter(cleared_at__isnull=True).values_list("kind", flat=True))
        assert open_kinds == {Kind.FAILED}, "a failed order needs one alert: failed"
        services.order_retry(order_id=order.pk, actor=operator)
        assert not order.alerts.filter(cleared_at__isnull=True).exists()

    def test_finishing_clears_late_and_stuck(self, order, operator):
        for kind in (Kind.LATE, Kind.STUCK):
            alerts.raise_alert(order=order, kind=kind, detail="...", source="system")
        services.order_cancel(order_id=order.pk, actor=operator, reason="customer called")
        assert not order.alerts.filter(cleared_at__isnull=True).exists()

    def test_progress_clears_stuck(self, order):
        alerts.raise_alert(order=order, kind=Kind.STUCK, detail="...", source="system")
        leg = order.legs.get(provider="melange")
        services.leg_apply_status(leg_id=leg.pk, provider_status="not started", source="poll")
        assert not order.alerts.filter(kind=Kind.STUCK, cleared_at__isnull=True).exists()


class TestTimeAlerts:
    def test_late_after_the_global_sla(self, order, settings):
        settings.ALERT_LATE_MINUTES = 30
        age(order, 20)
        assert alerts.check_time_alerts().late == 0
        age(order, 40)
        assert alerts.check_time_alerts().late == 1
        assert "Late 10 min" in order.alerts.get(kind=Kind.LATE).detail
        assert alerts.check_time_alerts().late == 0, "raised once"

    def test_a_restaurant_sla_wins(self, order, settings):
        settings.ALERT_LATE_MINUTES = 30
        Restaurant.objects.filter(name="Bueno").update(sla_minutes=90)
        age(order, 60)
        alerts.check_time_alerts()
        assert not order.alerts.filter(kind=Kind.LATE).exists()

    def test_the_eta_is_the_promise(self, order):
        Order.objects.filter(pk=order.pk).update(eta=timezone.now() - timedelta(minutes=3))
        alerts.check_time_alerts()
        assert order.alerts.get(kind=Kind.LATE).detail.startswith("Late 2 min") or "Late 3 min" in (
            order.alerts.get(kind=Kind.LATE).detail
        )

    def test_stuck_without_progress_in_a_status(self, order, settings):
        settings.ALERT_STUCK_MINUTES = {"scheduled": 10}
        age(order, 11)
        assert alerts.check_time_alerts().stuck == 1
        assert "No progress for 11 min in Scheduled" in order.alerts.get(kind=Kind.STUCK).detail

    def test_a_pre_order_is_neither_late_nor_stuck_before_its_time(self, customer, restaurants, settings):
        settings.ALERT_STUCK_MINUTES = {"scheduled": 10}
        pre_order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="Sahaidachnoho St, 10, Kyiv",
            eta=timezone.now() + timedelta(hours=3),
        )
        age(pre_order, 15)
        report = alerts.check_time_alerts()
        assert (report.late, report.stuck) == (0, 0)

    def test_stuck_clears_once_progress_resumes(self, order, settings):
        settings.ALERT_STUCK_MINUTES = {"scheduled": 10, "submitted": 10}
        age(order, 11)
        alerts.check_time_alerts()
        Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTED)
        OrderEvent.objects.create(
            order=order, type=OrderEvent.Type.STATUS, source="poll", to_status="submitted"
        )
        assert alerts.check_time_alerts().cleared == 1


class TestApi:
    def test_open_alerts_newest_first_with_filters(self, client_for, operator, order, customer, restaurants):
        other = factories.make_order(customer, restaurants["melange"])
        alerts.raise_alert(order=order, kind=Kind.LATE, detail="Late 5 min", source="system")
        alerts.raise_alert(order=other, kind=Kind.STUCK, detail="No progress", source="system")
        alerts.clear_alerts(order=order, kinds=[Kind.LATE], source="system")
        api = client_for(operator)
        body = api.get("/api/alerts/?open=true").json()
        assert [(a["order"], a["kind"], a["open"]) for a in body["results"]] == [(other.pk, "stuck", True)]
        assert body["results"][0]["order_status"] == "scheduled"
        assert len(api.get("/api/alerts/").json()["results"]) == 2
        assert api.get("/api/alerts/?kind=late").json()["results"][0]["open"] is False
        assert api.get(f"/api/alerts/?order={order.pk}").json()["count"] == 1
        assert api.get("/api/alerts/?kind=bored").status_code == 400

    def test_acknowledge_with_a_note_is_recorded(self, client_for, operator, order):
        alert = alerts.raise_alert(order=order, kind=Kind.LATE, detail="Late 5 min", source="system")
        response = client_for(operator).post(
            f"/api/alerts/{alert.pk}/acknowledge/", {"note": "Called the kitchen"}, format="json"
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["acknowledged_by"], body["note"], body["open"]) == ("olena", "Called the kitchen", True)
        event = order.events.get(type="alert.acknowledged")
        assert (event.actor, event.reason, event.alert_id) == (operator, "Called the kitchen", alert.pk)
        again = client_for(operator).post(f"/api/alerts/{alert.pk}/acknowledge/", {}, format="json")
        assert again.status_code == 409

    def test_acknowledging_an_alert_of_a_finished_order_resolves_it(self, client_for, operator, order):
        services.order_override_status(order_id=order.pk, actor=operator, to_status="failed", reason="test")
        alert = order.alerts.get(kind=Kind.FAILED)
        assert client_for(operator).post(f"/api/alerts/{alert.pk}/acknowledge/").status_code == 200
        alert.refresh_from_db()
        assert alert.cleared_at is not None

    def test_customers_may_neither_list_nor_acknowledge(self, client_for, customer, order):
        alert = alerts.raise_alert(order=order, kind=Kind.LATE, detail="Late", source="system")
        api = client_for(customer)
        assert api.get("/api/alerts/").status_code == 403
        assert api.post(f"/api/alerts/{alert.pk}/acknowledge/").status_code == 403
        assert "alerts" not in api.get(f"/api/orders/{order.pk}/").json()  # the operators' business

    def test_unknown_alert_is_404(self, client_for, operator):
        assert client_for(operator).post("/api/alerts/999999/acknowledge/").status_code == 404

    def test_orders_carry_their_open_alerts(self, client_for, operator, order):
        alerts.raise_alert(order=order, kind=Kind.STUCK, detail="No progress", source="system")
        [listed] = client_for(operator).get("/api/orders/").json()["results"]
        assert [(a["kind"], a["detail"]) for a in listed["alerts"]] == [("stuck", "No progress")]


class TestSearch:
    def test_by_number_address_username_and_sub_order_id(
        self, client_for, operator, order, other_customer, restaurants
    ):
        theirs = factories.make_order(other_customer, restaurants["melange"])
        Order.objects.filter(pk=theirs.pk).update(delivery_address="Obolonskyi Ave 19")
        Leg.objects.filter(order=theirs).update(external_id="mel_ABC123")
        api = client_for(operator)

        def found(**params) -> list[int]:
            response = api.get("/api/orders/", params)
            assert response.status_code == 200, response.content
            return [row["id"] for row in response.json()["results"]]

        assert found(q=str(order.pk)) == [order.pk]
        assert found(q=f"#{theirs.pk}") == [theirs.pk]
        assert found(q="obolon") == [theirs.pk]
        assert found(q="bob") == [theirs.pk]
        assert found(q="mel_abc123") == [theirs.pk]
        assert found(q="99999") == []
        assert found(provider="bueno") == [order.pk]
        assert found(restaurant=restaurants["melange"].pk) == [theirs.pk, order.pk]

    def test_by_time_and_courier(self, client_for, operator, order, customer, restaurants):
        older = factories.make_order(customer, restaurants["melange"])
        Order.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=2))
        courier = factories.make_courier()
        Order.objects.filter(pk=order.pk).update(courier=courier)
        api = client_for(operator)
        since = (timezone.now() - timedelta(days=1)).isoformat()
        assert [row["id"] for row in api.get("/api/orders/", {"created_after": since}).json()["results"]] == [
            order.pk
        ]
        assert [
            row["id"] for row in api.get("/api/orders/", {"created_before": since}).json()["results"]
        ] == [older.pk]
        assert [row["id"] for row in api.get("/api/orders/", {"courier": courier.pk}).json()["results"]] == [
            order.pk
        ]

    @pytest.mark.parametrize(
        "params",
        [
            {"created_after": "yesterday"},
            {"courier": "x"},
            {"q": "x" * 201},
        ],
    )
    def test_bad_filters_are_400(self, client_for, operator, params):
        assert client_for(operator).get("/api/orders/", params).status_code == 400

    def test_customers_search_only_their_orders(
        self, client_for, customer, order, other_customer, restaurants
    ):
        theirs = factories.make_order(other_customer, restaurants["melange"])
        assert client_for(customer).get("/api/orders/", {"q": str(theirs.pk)}).json()["results"] == []
