"""Reads: who may see which orders, and the querysets the API and realtime layers serve."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone

from core import rows

from .disclosure import PUBLIC_EVENT_TYPES, sees_internals
from .models import Alert, Courier, Dish, Leg, Order, OrderEvent, Restaurant, TrackingLink
from .status import ACTIVE, OrderStatus

LEG_LOOKUP_CACHE_SECONDS = 24 * 3600


def orderable_dishes(ids: Iterable[int]) -> dict[int, Dish]:
    """The dishes among `ids` on an active restaurant's menu, by id, each with its restaurant loaded.

    Every order's create reads them: in one statement, not compiled by the ORM (that cost several times
    running it: core.rows)."""
    dishes = rows.select_related(
        Dish, "restaurant", 'm."id" = ANY(%s) AND m."is_active" AND r."is_active"', [list(ids)]
    )
    return {dish.pk: dish for dish in dishes}


def restaurant_list() -> QuerySet[Restaurant]:
    dishes = Dish.objects.filter(is_active=True).order_by("name")
    return Restaurant.objects.filter(is_active=True).prefetch_related(Prefetch("dishes", queryset=dishes))


def orders_visible_to(user: AbstractBaseUser) -> QuerySet[Order]:
    """Operators see every order; anyone else sees the orders they placed or carry as courier."""
    orders = Order.objects.all()
    if user.is_staff:
        return orders
    return orders.filter(Q(customer_id=user.pk) | Q(courier__user_id=user.pk))


def _with_details(orders: QuerySet[Order]) -> QuerySet[Order]:
    return orders.select_related("courier").prefetch_related(
        "items__dish__restaurant",
        Prefetch("legs", queryset=Leg.objects.select_related("restaurant")),
        open_alerts(),
    )


def order_list(
    *,
    user: AbstractBaseUser,
    statuses: list[str] | None = None,
    q: str = "",
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    restaurant: int | None = None,
    provider: str = "",
    courier: int | None = None,
) -> QuerySet[Order]:
    """The orders `user` may see, filtered; newest first."""
    orders = orders_visible_to(user)
    if statuses:
        orders = orders.filter(status__in=statuses)
    if q:
        orders = orders.filter(_matching(q.strip(), sub_orders=user.is_staff))
    if created_after is not None:
        orders = orders.filter(created_at__gte=created_after)
    if created_before is not None:
        orders = orders.filter(created_at__lt=created_before)
    legs = Leg.objects.filter(order=OuterRef("pk"))
    if restaurant is not None:
        orders = orders.filter(Exists(legs.filter(restaurant_id=restaurant)))
    if provider:
        orders = orders.filter(Exists(legs.filter(provider=provider)))
    if courier is not None:
        orders = orders.filter(courier_id=courier)
    return _with_details(orders)


def _matching(q: str, *, sub_orders: bool) -> Q:
    """An order number (`123`, `#123`), or text in the address, the username or (for operators, who see
    them) a provider sub-order id: customers must not be able to confirm a guessed one."""
    number = q.removeprefix("#")
    match = Q(delivery_address__icontains=q) | Q(customer__username__icontains=q)
    if sub_orders:
        match |= Exists(Leg.objects.filter(order=OuterRef("pk"), external_id__iexact=q))
    if number.isdigit() and len(number) <= 18:
        match |= Q(pk=int(number))
    return match


def alert_list(*, open: bool | None = None, kind: str = "", order: int | None = None) -> QuerySet[Alert]:
    """Alerts newest first, with what their serializer reads."""
    alerts = Alert.objects.select_related("order", "acknowledged_by")
    if open is not None:
        alerts = alerts.filter(cleared_at__isnull=open)
    if kind:
        alerts = alerts.filter(kind=kind)
    if order is not None:
        alerts = alerts.filter(order_id=order)
    return alerts.order_by("-raised_at", "-id")


def order_detail_queryset(*, user: AbstractBaseUser) -> QuerySet[Order]:
    """The orders `user` may see, with their history: all of it for operators, else the public events."""
    events = OrderEvent.objects.select_related("actor", "alert").order_by("seq")
    if not sees_internals(user):
        events = events.filter(type__in=PUBLIC_EVENT_TYPES)
    return _with_details(orders_visible_to(user)).prefetch_related(Prefetch("events", queryset=events))


def active_courier_of(user: AbstractBaseUser) -> Courier | None:
    """The user's courier profile if it is active: who may use /courier/ and /ws/couriers/."""
    return Courier.objects.filter(user=user, is_active=True).first()


def courier_list() -> QuerySet[Courier]:
    return Courier.objects.filter(is_active=True).order_by("name")


def board_orders(orders: QuerySet[Order]) -> QuerySet[Order]:
    """What the operators' board holds: every active order, every order with an open alert whatever its
    age, and the orders that ended within DASHBOARD_RECENT_HOURS (so a reload keeps today's history)."""
    recent = timezone.now() - timedelta(hours=settings.DASHBOARD_RECENT_HOURS)
    open_alert = Alert.objects.filter(order=OuterRef("pk"), cleared_at__isnull=True)
    return orders.filter(Q(status__in=ACTIVE) | Q(updated_at__gte=recent) | Exists(open_alert))


def active_orders() -> QuerySet[Order]:
    return _with_details(Order.objects.filter(status__in=ACTIVE))


def leg_id_for_external(provider: str, external_id: str) -> int | None:
    """The leg of a provider's sub-order id: from the cache, else the database (then cached).

    A leg not yet sent has no external id: a blank one never matches, and neither a miss nor a blank
    is ever cached.
    """
    if not external_id:
        return None
    key = f"leg-of:{provider}:{external_id}"
    leg_id = cache.get(key)
    if leg_id is None:
        leg_id = (
            Leg.objects.filter(provider=provider, external_id=external_id)
            .values_list("id", flat=True)
            .first()
        )
        if leg_id is not None:
            cache.set(key, leg_id, LEG_LOOKUP_CACHE_SECONDS)
    return leg_id


def open_alert_counts() -> dict[str, int]:
    """How many alerts of each kind are open (not cleared), every kind listed, zeros included."""
    counts = dict(
        Alert.objects.filter(cleared_at__isnull=True)
        .order_by()
        .values("kind")
        .annotate(count=Count("id"))
        .values_list("kind", "count")
    )
    return {kind: counts.get(kind, 0) for kind in Alert.Kind.values}


def open_alerts() -> Prefetch:
    """An order's open alerts, newest first, as `order.open_alerts`."""
    alerts = Alert.objects.filter(cleared_at__isnull=True).select_related("acknowledged_by")
    return Prefetch("alerts", queryset=alerts.order_by("-raised_at", "-id"), to_attr="open_alerts")


def with_payload_details(orders: QuerySet[Order]) -> QuerySet[Order]:
    """What realtime payloads need: customer, courier, legs with restaurants, open alerts."""
    return orders.select_related("customer", "courier").prefetch_related(
        Prefetch("legs", queryset=Leg.objects.select_related("restaurant").order_by("id")), open_alerts()
    )


def with_stream_details(orders: QuerySet[Order]) -> QuerySet[Order]:
    """Payload details and each order's last event seq (snapshots)."""
    return with_payload_details(orders).annotate(last_seq=Max("events__seq"))


def throughput_per_minute(*, minutes: int) -> list[dict[str, object]]:
    """Orders created and delivered in each of the last `minutes` minutes, oldest first, zeros included."""
    now = timezone.now().replace(second=0, microsecond=0)
    since = now - timedelta(minutes=minutes - 1)
    rows = (
        OrderEvent.objects.filter(at__gte=since)
        .filter(
            Q(type=OrderEvent.Type.CREATED) | Q(type=OrderEvent.Type.STATUS, to_status=OrderStatus.DELIVERED)
        )
        .annotate(minute=TruncMinute("at"))
        .values("minute", "type")
        .annotate(count=Count("seq"))
    )
    counts = {(row["minute"], row["type"]): row["count"] for row in rows}
    series = []
    for offset in range(minutes):
        minute = since + timedelta(minutes=offset)
        series.append(
            {
                "minute": minute.isoformat(),
                "created": counts.get((minute, OrderEvent.Type.CREATED), 0),
                "delivered": counts.get((minute, OrderEvent.Type.STATUS), 0),
            }
        )
    return series


def tracking_link_active(token: str) -> TrackingLink | None:
    """The link behind `token`, with its order; None when unknown, revoked or expired."""
    return (
        TrackingLink.objects.select_related("order")
        .filter(
            token_hash=TrackingLink.hash_token(token), revoked_at__isnull=True, expires_at__gt=timezone.now()
        )
        .first()
    )


def tracking_link_order(token: str) -> Order | None:
    """The order a shared tracking link shows; None when the link is unknown, revoked or expired."""
    link = tracking_link_active(token)
    return link.order if link is not None else None


def orders_shareable_by(user: AbstractBaseUser) -> QuerySet[Order]:
    """The orders `user` may share a tracking link of: their own, or any for operators (not couriers)."""
    orders = Order.objects.all()
    return orders if user.is_staff else orders.filter(customer_id=user.pk)


def public_order_detail(order_id: int) -> Order | None:
    """One order with its public history (orders.disclosure), whoever asks: for a shared tracking link."""
    events = OrderEvent.objects.filter(type__in=PUBLIC_EVENT_TYPES).order_by("seq")
    return (
        _with_details(Order.objects.filter(pk=order_id))
        .prefetch_related(Prefetch("events", queryset=events))
        .first()
    )
