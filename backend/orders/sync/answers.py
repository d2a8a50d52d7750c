"""What a provider said about a sub-order, applied through the services: the one entry for polls and
webhooks (`apply_answer`), and its batch form for a poll tick (`apply_batch`).

Most answers in a tick repeat the last status: those cost no per-leg query. The cache remembers each
sub-order's last provider status (keyed by the provider's own id, unique for good, unlike our leg ids
after a database restore), read for a whole batch in one round trip; only an answer that may change
something goes through its own transaction. An unknown status is recorded on the leg as a failure and
retried like one.
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
    """`apply_answer` for a poll batch of (leg id, provider, answer): the number of legs changed, and the
    errors of legs whose answer could not be applied (one leg's bad data must not stop the others)."""
    leases.legs_clear_failures(leg_ids=[leg_id for leg_id, _, _ in answered])
    keys = [status_cache_key(provider, answer.external_id) for _, provider, answer in answered]
    known = cache.get_many(keys)
    learned: dict[str, str] = {}
    changed, errors = 0, []
    for (leg_id, _, answer), key in zip(answered, keys, strict=True):
        if known.get(key) == answer.status and answer.driver is None and answer.location is None:
            continue
        with log_context(leg_id=leg_id):
            try:
                changed += _apply_changes(leg_id, answer, source, known.get(key), learned, key)
            except Exception as error:
                logger.exception("Could not apply the answer for leg %s", leg_id)
                errors.append(f"leg {leg_id}: {error}")
    if learned:
        cache.set_many(learned, STATUS_CACHE_SECONDS)
    return changed, errors


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
