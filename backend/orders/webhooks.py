"""POST /webhooks/<provider>/: pushes from any provider that sends them. Polling stays on as the
backstop for webhooks that never arrive.

The provider module says how its webhooks are signed and what they carry (Provider.verify_signature,
Provider.parse_webhook); this view does the rest the same for all: a rate limit per source address, a
size limit, the signature before anything is parsed, then the answer applied like a poll's.
"""

import logging
import math

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import limits, parsers
from core.throttles import client_ip

from . import selectors
from .providers import BadWebhook, Provider, UnknownProviderStatus, get_provider
from .sync import answers

logger = logging.getLogger(__name__)

# A webhook is small. The web process has already refused bodies over MAX_REQUEST_BYTES before Django
# read them (core.serve, core.asgi_limits); this tighter limit applies to what gets this far.
MAX_BODY_BYTES = 16 * 1024


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _provider(name: str) -> Provider | None:
    """The configured provider called `name` if it pushes webhooks."""
    if name not in settings.PROVIDERS:
        return None
    provider = get_provider(name)
    return provider if provider.accepts_webhooks else None


@csrf_exempt
@require_POST
def provider_webhook(request: HttpRequest, provider_name: str) -> JsonResponse:
    """A provider reports a sub-order's state: {"ok": true, "changed": bool}, or a 4xx `{"error"}`."""
    retry_after = limits.hit(
        "webhook", client_ip(request), limits.parse_rate(settings.THROTTLE_WEBHOOK_PER_SOURCE)
    )
    if retry_after is not None:
        response = _error("too many webhook calls", 429)
        response["Retry-After"] = str(math.ceil(retry_after))
        return response
    provider = _provider(provider_name)
    if provider is None:
        return _error(f"no provider {provider_name[:40]!r} sends webhooks here", 404)
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return _error("body too large", 413)
    if not provider.verify_signature(body, request.headers):
        logger.warning("%s webhook with a bad signature refused", provider.name)
        return _error("bad signature", 401)
    try:
        answer = provider.parse_webhook(parsers.loads(body))
        provider.status_of(answer.status)
    except parsers.BadJSON as error:
        return _error(f"body is not JSON: {error}", 400)
    except BadWebhook as error:
        return _error(f"not a {provider.name} webhook: {error}", 400)
    except UnknownProviderStatus as error:
        logger.warning("%s webhook: %s", provider.name, error)
        return _error(str(error), 422)
    unknown = _error(f"unknown sub-order {answer.external_id[:80]!r}", 404)
    leg_id = selectors.leg_id_for_external(provider.name, answer.external_id)
    if leg_id is None:
        return unknown
    try:
        changed = answers.apply_answer(leg_id=leg_id, provider=provider.name, answer=answer, source="webhook")
    except ObjectDoesNotExist:  # deleted between the lookup and the update (its order was purged)
        return unknown
    return JsonResponse({"ok": True, "changed": changed})
