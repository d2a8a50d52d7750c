"""Alerts: what needs an operator, decided here on the server and recorded in the order's history.

Raised once (one open alert per order, kind and leg; the database enforces it), cleared when the cause is
gone, acknowledged by an operator with an optional note. Each of the three appends an OrderEvent
(`alert.raised`, `alert.cleared`, `alert.acknowledged`), so alerts reach clients through the relay and
resume like every other change.

Facts are checked where they change (the services call `raise_alert` / `clear_alerts` inside their
transaction, with the order locked) and, for the kinds that only time makes true (`late`, `stuck`), by
the beat task `orders.check_alerts` (`check_time_alerts`).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from core import metrics

from .errors import ActionNotAllowed, PermissionDenied
from .models import Alert, Leg, Order, OrderEvent
from .status import ACTIVE, TERMINAL, OrderStatus

logger = logging.getLogger(__name__)

Kind = Alert.Kind
ANY_LEG = object()
# Events that move an order or one of its legs: progress, for `stuck`.
PROGRESS_EVENTS = (
    OrderEvent.Type.CREATED,
    OrderEvent.Type.STATUS,
    OrderEvent.Type.LEG,
    OrderEvent.Type.OVERRIDE,
    OrderEvent.Type.RETRY,
)


def _record(
    alert: Alert, type: str, *, order: Order, source: str, actor: AbstractBaseUser | None = None
) -> None:
    OrderEvent.objects.create(
        order=order,
        leg_id=alert.leg_id,
        alert=alert,
        type=type,
        source=source,
        from_status=order.status,
        to_status=order.status,
        actor=actor if actor is not None and actor.is_authenticated else None,
        reason=alert.note if type == OrderEvent.Type.ALERT_ACKNOWLEDGED else alert.detail,
    )


def raise_alert(*, order: Order, kind: str, detail: str, source: str, leg: Leg | None = None) -> Alert | None:
    """Raise `kind` on a locked order (and leg) unless it is open already. Returns the new alert."""
    if Alert.objects.filter(order=order, kind=kind, leg=leg, cleared_at__isnull=True).exists():
        return None
    alert = Alert.objects.create(order=order, leg=leg, kind=kind, detail=detail[:2000])
    _record(alert, OrderEvent.Type.ALERT_RAISED, order=order, source=source)
    transaction.on_commit(metrics.ALERTS_RAISED.labels(kind=kind).inc)
    logger.warning("Alert %s on order %s: %s", kind, order.pk, detail)
    return alert


def clear_alerts(
    *, order: Order, kinds: Iterable[str], source: str, leg_id: int | None | object = ANY_LEG
) -> int:
    """Clear the open alerts of these kinds on a locked order (of one leg, or of any). Returns how many."""
    alerts = Alert.objects.filter(order=order, kind__in=list(kinds), cleared_at__isnull=True)
    if leg_id is not ANY_LEG:
        alerts = alerts.filter(leg_id=leg_id)
    now = timezone.now()
    cleared = 0
    for alert in alerts.order_by("id"):
        alert.cleared_at = now
        alert.save(update_fields=["cleared_at"])
        _record(alert, OrderEvent.Type.ALERT_CLEARED, order=order, source=source)
        cleared += 1
    return cleared


@transaction.atomic
def alert_acknowledge(*, alert_id: int, actor: AbstractBaseUser, note: str = "") -> Alert:
    """An operator has seen the alert and takes it on. On a finished order nothing will clear it by itself,
    so acknowledging resolves (clears) it too."""
    if not actor.is_staff:
        raise PermissionDenied("Only operators may acknowledge alerts.")
    order_id = Alert.objects.values_list("order_id", flat=True).get(pk=alert_id)
    order = Order.objects.select_for_update().get(pk=order_id)  # the order first, as every writer locks
    alert = Alert.objects.select_for_update().get(pk=alert_id)
    if alert.acknowledged_at is not None:
        raise ActionNotAllowed(f"Alert #{alert.pk} was acknowledged already.")
    if alert.cleared_at is not None:
        raise ActionNotAllowed(f"Alert #{alert.pk} is cleared: its cause is gone.")
    alert.acknowledged_by, alert.acknowledged_at, alert.note = actor, timezone.now(), note.strip()[:2000]
    alert.save(update_fields=["acknowledged_by", "acknowledged_at", "note"])
    _record(
        alert, OrderEvent.Type.ALERT_ACKNOWLEDGED, order=order, source=OrderEvent.Source.OPERATOR, actor=actor
    )
    if order.status in TERMINAL:
        clear_alerts(order=order, kinds=[alert.kind], leg_id=alert.leg_id, source=OrderEvent.Source.OPERATOR)
        alert.refresh_from_db()
    logger.info("Alert %s on order %s acknowledged by %s", alert.kind, order.pk, actor)
    return alert


# --- time-based alerts (beat) ------------------------------------------------------------------------------


def promised_at(order: Order, sla_minutes: int | None) -> datetime:
    """When the order was promised: its ETA, else its creation plus the kitchens' (or the global) SLA."""
    if order.eta is not None:
        return order.eta
    return order.created_at + timedelta(minutes=sla_minutes or settings.ALERT_LATE_MINUTES)


def order_promised_at(order: Order) -> datetime:
    """`promised_at` for an order whose legs (with restaurants) are loaded: what clients count down to."""
    slas = [leg.restaurant.sla_minutes for leg in order.legs.all() if leg.restaurant_id]
    return promised_at(order, max((sla for sla in slas if sla), default=None))


def submit_at(order: Order) -> datetime:
    """When the kitchens are (to be) sent the order: at once, or ORDER_LEAD_MINUTES before its ETA."""
    if order.eta is None:
        return order.created_at
    return max(order.created_at, order.eta - timedelta(minutes=settings.ORDER_LEAD_MINUTES))


def stuck_after(status: str) -> timedelta | None:
    minutes = settings.ALERT_STUCK_MINUTES.get(status)
    return None if minutes is None else timedelta(minutes=minutes)


@dataclass
class CheckReport:
    late: int = 0
    stuck: int = 0
    cleared: int = 0


def check_time_alerts(now: datetime | None = None) -> CheckReport:
    """Raise `late` and `stuck` on active orders that are so now; clear `stuck` where progress resumed."""
    now = now or timezone.now()
    report = CheckReport()
    open_alert = Alert.objects.filter(order=OuterRef("pk"), cleared_at__isnull=True)
    legs = Leg.objects.filter(order=OuterRef("pk"))
    candidates = (
        Order.objects.filter(status__in=ACTIVE)
        .annotate(
            is_late=Exists(open_alert.filter(kind=Kind.LATE)),
            is_stuck=Exists(open_alert.filter(kind=Kind.STUCK)),
            sla=Subquery(
                legs.filter(restaurant__sla_minutes__isnull=False)
                .order_by("-restaurant__sla_minutes")
                .values("restaurant__sla_minutes")[:1]
            ),
            moved_at=Subquery(
                OrderEvent.objects.filter(order=OuterRef("pk"), type__in=PROGRESS_EVENTS)
                .order_by("-seq")
                .values("at")[:1]
            ),
        )
        .only("id", "status", "eta", "created_at")
    )
    for order in candidates:
        if not order.is_late:
            promised = promised_at(order, order.sla)
            if now > promised:
                late = _minutes(now - promised)
                report.late += _raise_checked(
                    order.pk, Kind.LATE, f"Late {late} min (promised {_clock(promised)})"
                )
        threshold = stuck_after(order.status)
        since = order.moved_at or order.created_at
        if order.status == OrderStatus.SCHEDULED:
            since = max(since, submit_at(order))  # a pre-order waits for its submit time: not stuck before
        stuck = threshold is not None and now - since > threshold
        if stuck and not order.is_stuck:
            detail = f"No progress for {_minutes(now - since)} min in {OrderStatus(order.status).label}"
            report.stuck += _raise_checked(order.pk, Kind.STUCK, detail, expect_status=order.status)
        elif order.is_stuck and not stuck:
            report.cleared += _clear_checked(order.pk, Kind.STUCK)
    return report


@transaction.atomic
def _raise_checked(order_id: int, kind: str, detail: str, expect_status: str | None = None) -> int:
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.status in TERMINAL or (expect_status is not None and order.status != expect_status):
        return 0  # it moved since the check read it
    return 1 if raise_alert(order=order, kind=kind, detail=detail, source=OrderEvent.Source.SYSTEM) else 0


@transaction.atomic
def _clear_checked(order_id: int, kind: str) -> int:
    order = Order.objects.select_for_update().get(pk=order_id)
    return clear_alerts(order=order, kinds=[kind], source=OrderEvent.Source.SYSTEM)


def _minutes(delta: timedelta) -> int:
    return max(int(delta.total_seconds() // 60), 0)


def _clock(moment: datetime) -> str:
    local = timezone.localtime(moment)
    today = timezone.localdate()
    return local.strftime("%H:%M") if local.date() == today else local.strftime("%d %b %H:%M")
