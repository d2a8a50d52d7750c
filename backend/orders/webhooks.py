"""Provider webhooks. Polling stays on as the backstop for webhooks that never arrive."""

import hashlib
import hmac
import logging
import math

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import limits, parsers
from core.throttles import client_ip

from . import polling, selectors
from .providers import ProviderOrder
from .status import UnknownProviderStatus, map_provider_status

logger = logging.getLogger(__name__)

# A webhook is small. The web process has already refused bodies over MAX_REQUEST_BYTES before Django
# read them (core.serve, core.asgi_limits); this tighter limit applies to what gets this far.
MAX_BODY_BYTES = 16 * 1024


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def signature_of(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@csrf_exempt
@require_POST
def bueno_webhook(request: HttpRequest) -> JsonResponse:
    """Bueno POSTs {id, status, at, event_id} signed with HMAC-SHA256 in X-Bueno-Signature."""
    retry_after = limits.hit(
        "webhook", client_ip(request), limits.parse_rate(settings.THROTTLE_WEBHOOK_PER_SOURCE)
    )
    if retry_after is not None:
        response = _error("too many webhook calls", 429)
        response["Retry-After"] = str(math.ceil(retry_after))
        return response
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return _error("body too large", 413)
    signature = request.headers.get("X-Bueno-Signature", "")
    if not hmac.compare_digest(
        signature.encode(), signature_of(body, settings.BUENO_WEBHOOK_SECRET).encode()
    ):
        logger.warning("Bueno webhook with a bad signature refused")
        return _error("bad signature", 401)
    try:
        payload = parsers.loads(body)
    except parsers.BadJSON as error:
        return _error(f"body is not JSON: {error}", 400)
    if not isinstance(payload, dict) or not all(
        isinstance(payload.get(key), str) for key in ("id", "status")
    ):
        return _error("expected {id: string, status: string}", 400)
    try:
        map_provider_status("bueno", payload["status"])
    except UnknownProviderStatus as error:
        logger.warning("Bueno webhook: %s", error)
        return _error(str(error), 422)
    leg_id = selectors.leg_id_for_external("bueno", payload["id"])
    if leg_id is None:
        return _error(f"unknown sub-order {payload['id'][:80]!r}", 404)
    answer = ProviderOrder(external_id=payload["id"], status=payload["status"])
    try:
        changed = polling.apply_answer(leg_id=leg_id, provider="bueno", answer=answer, source="webhook")
    except ObjectDoesNotExist:  # deleted between the lookup and the update (its order was purged)
        return _error(f"unknown sub-order {payload['id'][:80]!r}", 404)
    return JsonResponse({"ok": True, "changed": changed})
