"""How an API request proves who sends it: `Authorization: Token <token>`, checked by django-rest-knox.

Its own module, not core.auth: DRF imports the authentication classes while rest_framework.views is still
loading, so this module must not import views.
"""

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken
from knox.signals import token_expired


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token check in one query: the token with its user.

    knox also reads every other token of the user on each request, to delete the expired ones; here the
    hourly `core.purge_expired_tokens` does that, and a request only checks its own token's expiry (an
    expired token is refused and deleted, as knox does)."""

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class TokenScheme(KnoxTokenScheme):
    """The API schema names this class's scheme as knox's (drf-spectacular matches exact classes)."""

    target_class = TokenAuthentication
