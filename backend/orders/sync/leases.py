"""Poll leases and the tick's batch bookkeeping: thousands of legs per tick, one statement each.

A claimed leg's next_poll_at is moved to the end of its lease: a leg whose poller dies is due again
then. The batch statements lock their legs in ascending id order in the same statement
(`_legs_locked_by_id`), as the services lock an order's legs, so no cycle of waits can form (see
orders.services). Claims skip locked legs and never wait.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .. import services
from ..models import Leg

Cancel = Leg.CancelStatus


def id_in(ids: list[int]) -> RawSQL:
    """Right-hand side for `id__in` with a poll batch of ids sent as ONE array parameter.

    A plain list becomes one placeholder per id, each prepared by Django in Python: costly with thousands
    of legs per tick.
    """
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])


def poll_lease() -> timedelta:
    """How long a claimed leg is reserved for its poller: a whole call with retries fits in it."""
    return timedelta(seconds=settings.PROVIDER_TIMEOUT_SECONDS * 2 + settings.POLL_INTERVAL_SECONDS)


@transaction.atomic
def legs_claim_due(
    *, limit: int, order_ids: list[int] | None = None, due_by: datetime | None = None
) -> tuple[list[int], datetime]:
    """Reserve up to `limit` due legs for this poller; concurrent pollers skip them (SKIP LOCKED).

    Returns the leg ids and the lease end written into their next_poll_at: a leg whose poller dies is
    due again when the lease ends. With `due_by` (the tick's start), only legs due by then are taken:
    a tick slower than the poll interval would otherwise claim its own legs again, batch after batch,
    until its time budget ran out. With `order_ids`, only those orders' legs.
    """
    now = timezone.now()
    due_by = now if due_by is None else min(due_by, now)
    due = (
        Leg.objects.select_for_update(skip_locked=True)
        .filter(next_poll_at__lte=due_by)
        .order_by("next_poll_at")
    )
    if order_ids is not None:
        due = due.filter(order_id__in=id_in(order_ids))
    leg_ids = list(due.values_list("id", flat=True)[:limit])
    lease_until = now + poll_lease()
    if leg_ids:
        Leg.objects.filter(id__in=id_in(leg_ids)).update(next_poll_at=lease_until)
    return leg_ids, lease_until


def _legs_locked_by_id(leg_ids: list[int], condition: str, *params: object) -> RawSQL:
    """Right-hand side for `id__in`: those of `leg_ids` matching `condition`, locked in ascending id order.

    A batch statement's UPDATE then writes only rows it already holds (see the module docstring). The
    lock is the one an UPDATE takes anyway (FOR NO KEY UPDATE); a row it had to wait for is checked
    against `condition` again in its newest version, as an UPDATE's own WHERE would be.
    """
    return RawSQL(
        f"SELECT id FROM {Leg._meta.db_table} WHERE id = ANY(%s::bigint[]) AND {condition}"
        " ORDER BY id FOR NO KEY UPDATE",
        [list(leg_ids), *params],
    )


def legs_reschedule(*, leg_ids: list[int], lease_until: datetime, at: datetime) -> int:
    """Set the next poll of answered legs, unless something else (a finished order) changed it meanwhile."""
    if not leg_ids:
        return 0
    leased = _legs_locked_by_id(leg_ids, "next_poll_at = %s", lease_until)
    return Leg.objects.filter(id__in=leased).update(next_poll_at=at)


def leg_set_external_id(*, leg_id: int, external_id: str) -> None:
    """Remember the provider's id of a sub-order we created (first answer wins; creates are idempotent)."""
    Leg.objects.filter(pk=leg_id, external_id="").update(external_id=external_id, updated_at=timezone.now())


def legs_set_external_ids(*, external_ids: dict[int, str]) -> int:
    """`leg_set_external_id` for a whole poll batch in one statement (thousands of creates per tick)."""
    if not external_ids:
        return 0
    without_id = _legs_locked_by_id(list(external_ids), "external_id = ''")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Leg._meta.db_table} AS leg SET external_id = new.external_id, updated_at = %s
                FROM unnest(%s::bigint[], %s::text[]) AS new(id, external_id)
                WHERE leg.id = new.id AND leg.id IN ({without_id.sql})
                RETURNING leg.id, leg.order_id, leg.cancel_status""",
            [timezone.now(), list(external_ids), list(external_ids.values()), *without_id.params],
        )
        stored = cursor.fetchall()
    for leg_id, order_id, cancel_status in stored:
        if cancel_status == Cancel.CONFIRMED:  # its order was cancelled while the create was on its way
            services.leg_cancel_reached_late(order_id=order_id, leg_id=leg_id)
    return len(stored)


def leg_clear_failure(*, leg_id: int) -> None:
    """The provider answered: forget past failures (writes only when there were some)."""
    legs_clear_failures(leg_ids=[leg_id])


def legs_clear_failures(*, leg_ids: list[int]) -> int:
    """The providers answered: forget the legs' past failures and clear their `provider_failing` alerts.

    One statement for a whole poll batch, which usually matches no row; each leg that was failing then
    clears its alert in a transaction of its own.
    """
    if not leg_ids:
        return 0
    # a cancel being retried keeps its count: answering a poll or webhook is not confirming the cancel
    failing = _legs_locked_by_id(leg_ids, "attempts > 0 AND cancel_status <> %s", Cancel.REQUESTED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Leg._meta.db_table}
                SET attempts = 0, last_error = '', deadline_at = NULL, updated_at = %s
                WHERE id IN ({failing.sql}) RETURNING id, order_id""",
            [timezone.now(), *failing.params],
        )
        recovered = cursor.fetchall()
    for leg_id, order_id in sorted(recovered):
        services.leg_recovered(order_id=order_id, leg_id=leg_id)
    return len(recovered)


def legs_stop_polling(*, leg_ids: list[int], lease_until: datetime) -> int:
    """Claimed legs the poller must not call (a sub-order of a finished order never to be created)."""
    if not leg_ids:
        return 0
    leased = _legs_locked_by_id(leg_ids, "next_poll_at = %s", lease_until)
    return Leg.objects.filter(id__in=leased).update(next_poll_at=None)
