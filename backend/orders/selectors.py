"""Reads: who may see which orders, and the querysets the API and realtime layers serve."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, Max, Prefetch, Q, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone

from .models import Dish, Leg, Order, OrderEvent, Restaurant
from .status import ACTIVE, OrderStatus

LEG_LOOKUP_CACHE_SECONDS = 24 * 3600


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
    )


def order_list(*, user: AbstractBaseUser, statuses: list[str] | None = None) -> QuerySet[Order]:
    orders = orders_visible_to(user)
    if statuses:
        orders = orders.filter(status__in=statuses)
    return _with_details(orders)


def order_detail_queryset(*, user: AbstractBaseUser) -> QuerySet[Order]:
    events = OrderEvent.objects.select_related("actor").order_by("seq")
    return _with_details(orders_visible_to(user)).prefetch_related(Prefetch("events", queryset=events))


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


def with_payload_details(orders: QuerySet[Order]) -> QuerySet[Order]:
    """What realtime payloads need: courier, legs with restaurants."""
    return orders.select_related("courier").prefetch_related(
        Prefetch("legs", queryset=Leg.objects.select_related("restaurant").order_by("id"))
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
