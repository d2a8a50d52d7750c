"""What a provider said about a sub-order, applied through the services: the one entry for polls and
webhooks (`apply_answer`), and its batch form for a poll tick (`apply_batch`).

Most answers in a tick repeat the last status: those cost no per-leg query. The cache remembers each
sub-order's last provider status (keyed by the provider's own id, unique for good, unlike our leg ids
after a database restore), read for a whole batch in one round trip; the answers that may change
something are applied together (`services.legs_apply_statuses`), a webhook's alone. An unknown status
is recorded on the leg as a failure and retried like one.
"""

import logging

from django.core.cache import cache

from core.logs import log_context

from .. import services
from ..providers import ProviderOrder, UnknownProviderStatus
from . import leases

logger = logging.getLogger(__name__)

STATUS_CACHE_SECONDS = 3600


def status_cache_key(provider: str, external_id: str) -> str:
    return f"provider-status:{provider}:{external_id}"


def apply_answer(*, leg_id: int, provider: str, answer: ProviderOrder, source: str) -> bool:
    """Apply one provider answer (from a poll or a webhook). True when it changed anything."""
    leases.leg_clear_failure(leg_id=leg_id)
    key = status_cache_key(provider, answer.external_id)
    learned: dict[str, str] = {}
    with log_context(leg_id=leg_id):
        changed = _apply_changes(leg_id, answer, source, cache.get(key), learned, key)
    if learned:
        cache.set_many(learned, STATUS_CACHE_SECONDS)
    return changed


def apply_batch(
    answered: list[tuple[int, str, ProviderOrder]], *, source: str = "poll"
) -> tuple[int, list[str]]:
    """`apply_answer` for a poll batch of (leg id, provider, answer): the number of answers that changed
    anything, and the errors of legs whose answer could not be applied (one leg's bad data must not stop
    the others).

    Couriers and locations first, one answer at a time (only answers of legs on the road carry them),
    then every status the cache does not know, in one call (`services.legs_apply_statuses`: the common
    change costs no statement of its own).
    """
    leases.legs_clear_failures(leg_ids=[leg_id for leg_id, _, _ in answered])
    keys = [status_cache_key(provider, answer.external_id) for _, provider, answer in answered]
    known = cache.get_many(keys)
    errors: list[str] = []
    moved: set[int] = set()  # answers that changed the courier or its position
    statuses: list[int] = []  # answers whose status the cache does not know
    for index, ((leg_id, _, answer), key) in enumerate(zip(answered, keys, strict=True)):
        if answer.driver is not None or answer.location is not None:
            with log_context(leg_id=leg_id):
                try:
                    if services.delivery_record_progress(
                        leg_id=leg_id, driver=answer.driver, location=answer.location, source=source
                    ):
                        moved.add(index)
                except Exception as error:
                    logger.exception("Could not apply the answer for leg %s", leg_id)
                    errors.append(f"leg {leg_id}: {error}")
                    continue
        if known.get(key) != answer.status:
            statuses.append(index)
    outcomes = services.legs_apply_statuses(
        changes=[services.StatusChange(answered[index][0], answered[index][2].status) for index in statuses],
        source=source,
    )
    learned: dict[str, str] = {}
    for index, outcome in zip(statuses, outcomes, strict=True):
        leg_id, answer = answered[index][0], answered[index][2]
        if outcome.error is None:
            learned[keys[index]] = answer.status
        elif not isinstance(outcome.error, UnknownProviderStatus):  # an unknown one is a leg failure now
            with log_context(leg_id=leg_id):
                logger.error("Could not apply the answer for leg %s", leg_id, exc_info=outcome.error)
            errors.append(f"leg {leg_id}: {outcome.error}")
        if outcome.event is not None:
            moved.add(index)
    if learned:
        cache.set_many(learned, STATUS_CACHE_SECONDS)
    return len(moved), errors


def _apply_changes(
    leg_id: int, answer: ProviderOrder, source: str, known: str | None, learned: dict[str, str], key: str
) -> bool:
    """Courier and location, then the status unless the cache knows it; the status to cache in `learned`."""
    changed = False
    if answer.driver is not None or answer.location is not None:
        changed = services.delivery_record_progress(
            leg_id=leg_id, driver=answer.driver, location=answer.location, source=source
        )
    if known == answer.status:
        return changed
    try:
        event = services.leg_apply_status(leg_id=leg_id, provider_status=answer.status, source=source)
    except UnknownProviderStatus as error:
        services.leg_record_failure(leg_id=leg_id, error=str(error))
        return changed
    learned[key] = answer.status
    return changed or event is not None
