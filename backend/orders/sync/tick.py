"""One poll tick: claim due legs, ask their providers concurrently, apply what they answered.

The HTTP calls run concurrently on the process's provider event loop (orders.providers.http, bounded
per provider); every database write happens before or after them, in short transactions, never around
a provider call. Creating a sub-order and polling one are the same job: a leg without an external id is
created first.

Cancelling is a job of the same kind: a leg whose cancellation is `requested` (orders.services.
order_cancel) is due at once, and its job asks the provider to cancel instead of fetching; the answer
(confirmed, refused, or an error to retry with backoff) goes through the services, one leg at a time:
cancels are rare.
"""

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from core import metrics
from core.logs import log_context

from .. import services
from ..models import Leg, OrderItem
from ..providers import (
    DeliveryRequest,
    KitchenRequest,
    Provider,
    ProviderCancelRefused,
    ProviderError,
    ProviderOrder,
    get_provider,
    http,
)
from ..status import TERMINAL
from . import answers, leases

logger = logging.getLogger(__name__)

EXTERNAL_ID_MAX_LENGTH = Leg._meta.get_field("external_id").max_length
CANCEL_REQUESTED = Leg.CancelStatus.REQUESTED
# Beyond the tick's budget, the batch under way may still wait for its calls (a cancel job makes two,
# each up to PROVIDER_TIMEOUT_SECONDS) and write its answers.
BATCH_WRITE_SECONDS = 30


@dataclass(frozen=True)
class LegJob:
    leg_id: int
    provider: str
    external_id: str
    request: KitchenRequest | DeliveryRequest | None  # set when the sub-order is still to be created
    cancel: bool = False  # ask the provider to cancel the sub-order (creating it again first if unnamed)


@dataclass
class TickReport:
    claimed: int = 0
    created: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    cancels: int = 0  # of `claimed`, cancel jobs answered (confirmed or refused)
    seconds: float = 0.0
    http_seconds: float = 0.0  # of `seconds`, waiting for providers; the rest is our database work
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def time_limits() -> tuple[float, float]:
    """The poll task's (soft, hard) time limits, from the one setting POLL_TICK_BUDGET_SECONDS: the
    budget, plus the worst case of the batch under way when it runs out."""
    soft = settings.POLL_TICK_BUDGET_SECONDS + 2 * settings.PROVIDER_TIMEOUT_SECONDS + BATCH_WRITE_SECONDS
    return soft, soft + BATCH_WRITE_SECONDS


def poll_due_legs(*, order_ids: list[int] | None = None) -> TickReport:
    """Work through due legs (of `order_ids` only, when given) batch by batch until none are due or the
    tick's time budget is spent."""
    started = time.monotonic()
    due_by = timezone.now()  # legs falling due during this tick are the next tick's work
    report = TickReport()
    while True:
        leg_ids, lease_until = leases.legs_claim_due(
            limit=settings.POLL_BATCH_SIZE, order_ids=order_ids, due_by=due_by
        )
        if not leg_ids:
            break
        report.batches += 1
        report.claimed += len(leg_ids)
        jobs = load_jobs(leg_ids, lease_until=lease_until)
        asked = time.monotonic()
        results = http.run(ask_providers(jobs))
        report.http_seconds += time.monotonic() - asked
        _apply_results(jobs, results, lease_until, report)
        if (
            len(leg_ids) < settings.POLL_BATCH_SIZE
            or time.monotonic() - started > settings.POLL_TICK_BUDGET_SECONDS
        ):
            break
    report.seconds = time.monotonic() - started
    if order_ids is None:  # the beat's tick, not some orders' submission
        metrics.POLL_TICK_SECONDS.observe(report.seconds)
        metrics.POLL_TICK_LEGS.observe(report.claimed)
    if report.claimed:
        logger.info(
            "Poll tick: %d legs in %.2fs (%d created, %d changed, %d unchanged, %d failed)",
            report.claimed,
            report.seconds,
            report.created,
            report.changed,
            report.unchanged,
            report.failed,
        )
    return report


def load_jobs(leg_ids: list[int], *, lease_until: datetime | None = None) -> list[LegJob]:
    """What the poller needs to call the provider of each leg, read before any HTTP call starts.

    A leg already created at its provider needs only its provider, external id and cancellation (read
    as tuples: thousands per tick); only legs still to be created load their order, restaurant and
    items. A finished order gets no new sub-order (only a cancel job replays a create, to cancel what it
    made): with `lease_until`, such a leg stops being polled.
    """
    legs = Leg.objects.filter(id__in=leases.id_in(leg_ids)).order_by("id")
    rows = legs.values_list("id", "provider", "external_id", "cancel_status")
    jobs = {
        leg_id: LegJob(leg_id, provider, external_id, None, cancel_status == CANCEL_REQUESTED)
        for leg_id, provider, external_id, cancel_status in rows
    }
    pending_ids = [leg_id for leg_id, job in jobs.items() if not job.external_id]
    if pending_ids:
        idle = []
        for job in _pending_jobs(pending_ids):
            if job.request is None:
                idle.append(job.leg_id)
                del jobs[job.leg_id]
            else:
                jobs[job.leg_id] = job
        if idle and lease_until is not None:
            logger.warning("Not creating legs %s: their orders are finished", idle)
            leases.legs_stop_polling(leg_ids=idle, lease_until=lease_until)
    return list(jobs.values())


def _pending_jobs(leg_ids: list[int]) -> list[LegJob]:
    pending = list(Leg.objects.filter(id__in=leg_ids).select_related("order", "restaurant").order_by("id"))
    order_ids = {leg.order_id for leg in pending}
    kitchen_leg_of = {
        (leg.order_id, leg.restaurant_id): leg.pk for leg in pending if leg.kind == Leg.Kind.KITCHEN
    }
    items: dict[int, list[tuple[str, int]]] = {}
    for item in OrderItem.objects.filter(order_id__in=order_ids).select_related("dish").order_by("id"):
        leg_id = kitchen_leg_of.get((item.order_id, item.dish.restaurant_id))
        if leg_id is not None:
            items.setdefault(leg_id, []).append((item.dish.name, item.quantity))
    kitchens: dict[int, list[Leg]] = {}
    if any(leg.kind == Leg.Kind.DELIVERY for leg in pending):
        kitchen_legs = Leg.objects.filter(order_id__in=order_ids, kind=Leg.Kind.KITCHEN).select_related(
            "restaurant"
        )
        for kitchen in kitchen_legs.order_by("id"):
            kitchens.setdefault(kitchen.order_id, []).append(kitchen)
    return [_job(leg, items.get(leg.pk, []), kitchens.get(leg.order_id, [])) for leg in pending]


def _job(leg: Leg, items: list[tuple[str, int]], kitchens: list[Leg]) -> LegJob:
    request: KitchenRequest | DeliveryRequest | None = None
    key = f"liveops-leg-{leg.pk}"
    cancel = leg.cancel_status == CANCEL_REQUESTED
    if leg.external_id or (leg.order.status in TERMINAL and not cancel):
        request = None  # a finished order gets no new sub-order: the caller drops the job
    elif leg.kind == Leg.Kind.KITCHEN:
        request = KitchenRequest(idempotency_key=key, items=items, reference=f"order-{leg.order_id}")
    else:
        request = DeliveryRequest(
            idempotency_key=key,
            addresses=[kitchen.restaurant.address for kitchen in kitchens] + [leg.order.delivery_address],
            comments=[f"{kitchen.restaurant.name} order {kitchen.external_id}" for kitchen in kitchens],
            points=[kitchen.restaurant.point for kitchen in kitchens] + [leg.order.point],
        )
    return LegJob(
        leg_id=leg.pk, provider=leg.provider, external_id=leg.external_id, request=request, cancel=cancel
    )


async def ask_providers(jobs: list[LegJob]) -> list[ProviderOrder | ProviderError]:
    """Every job's call, at most PROVIDER_CONCURRENCY in flight per provider; runs on the provider loop.

    That many workers per provider take the next job when their call ends: a few dozen coroutines
    rather than one task per leg.
    """
    results: list[ProviderOrder | ProviderError | None] = [None] * len(jobs)
    queues: dict[str, deque[int]] = {}
    for index, job in enumerate(jobs):
        queues.setdefault(job.provider, deque()).append(index)

    async def work(queue: deque[int]) -> None:
        while queue:
            index = queue.popleft()
            results[index] = await _ask(jobs[index])

    await asyncio.gather(
        *(
            work(queue)
            for queue in queues.values()
            for _ in range(min(settings.PROVIDER_CONCURRENCY, len(queue)))
        )
    )
    return results  # type: ignore[return-value]  # every index was answered


async def _ask(job: LegJob) -> ProviderOrder | ProviderError:
    try:
        provider = get_provider(job.provider)
        if job.cancel:
            return await _cancel(provider, job)
        if job.request is not None:
            return await provider.create(job.request)
        return await provider.fetch(job.external_id)
    except ProviderError as error:
        return error
    except Exception as error:  # a bug in one provider module must not lose the whole batch
        logger.exception("Unexpected error polling leg %s", job.leg_id)
        return ProviderError(f"internal error: {type(error).__name__}: {error}")


async def _cancel(provider: Provider, job: LegJob) -> ProviderOrder:
    """Cancel a leg's sub-order. Without its id (the create was claimed, or failed, before the order was
    cancelled, and may have reached the provider), the create is sent again first: its Idempotency-Key
    answers the sub-order the provider already has, or makes the one to cancel."""
    external_id = job.external_id
    if not external_id:
        if job.request is None:
            raise ProviderError("no sub-order id and nothing to create it again from")
        external_id = (await provider.create(job.request)).external_id
    return await provider.cancel(external_id)


def _apply_results(
    jobs: list[LegJob],
    results: list[ProviderOrder | ProviderError],
    lease_until: datetime,
    report: TickReport,
) -> None:
    answered: list[tuple[LegJob, ProviderOrder]] = []
    failed: list[tuple[LegJob, str]] = []
    cancels: list[tuple[LegJob, ProviderOrder | ProviderError]] = []
    for job, result in zip(jobs, results, strict=True):
        if job.cancel:
            cancels.append((job, result))
        elif isinstance(result, ProviderError):
            failed.append((job, str(result)))
        elif job.request is not None and len(result.external_id) > EXTERNAL_ID_MAX_LENGTH:
            failed.append((job, f"external id longer than {EXTERNAL_ID_MAX_LENGTH}"))
        else:
            answered.append((job, result))
    # external ids first: a webhook for a sub-order we just created can only be matched once it is stored
    created = {job.leg_id: answer.external_id for job, answer in answered if job.request is not None}
    leases.legs_set_external_ids(external_ids=created)
    report.created += len(created)
    changed, errors = answers.apply_batch([(job.leg_id, job.provider, answer) for job, answer in answered])
    report.changed += changed
    report.unchanged += len(answered) - changed - len(errors)
    report.errors.extend(errors)
    for job, error in failed:
        with log_context(leg_id=job.leg_id):
            _record_failure(job, error, report)
    for job, result in cancels:
        with log_context(leg_id=job.leg_id):
            _apply_cancel(job, result, report)
    next_poll = lease_until - leases.poll_lease() + timedelta(seconds=settings.POLL_INTERVAL_SECONDS)
    leases.legs_reschedule(leg_ids=[job.leg_id for job, _ in answered], lease_until=lease_until, at=next_poll)


def _record_failure(job: LegJob, error: str, report: TickReport) -> None:
    report.failed += 1
    try:
        services.leg_record_failure(leg_id=job.leg_id, error=error)
    except Exception as failure:  # one leg's bad data must not stop the others
        logger.exception("Could not record the failure of leg %s", job.leg_id)
        report.errors.append(f"leg {job.leg_id}: {failure}")


def _apply_cancel(job: LegJob, result: ProviderOrder | ProviderError, report: TickReport) -> None:
    """A cancel job's answer, through the services: confirmed, refused, or failed (retried)."""
    try:
        if isinstance(result, ProviderCancelRefused):
            report.cancels += 1
            services.leg_cancel_refused(leg_id=job.leg_id, reason=result.reason)
        elif isinstance(result, ProviderError) or len(result.external_id) > EXTERNAL_ID_MAX_LENGTH:
            report.failed += 1
            error = str(result) if isinstance(result, ProviderError) else "external id too long"
            services.leg_cancel_failed(leg_id=job.leg_id, error=error)
        else:
            report.cancels += 1
            services.leg_cancel_confirmed(leg_id=job.leg_id, external_id=result.external_id)
    except Exception as failure:  # one leg's bad data must not stop the others
        logger.exception("Could not apply the cancel answer for leg %s", job.leg_id)
        report.errors.append(f"leg {job.leg_id}: {failure}")
