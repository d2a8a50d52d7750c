"""How an API request proves who sends it: `Authorization: Token <token>`, checked by django-rest-knox.

Its own module, not core.auth: DRF imports the authentication classes while rest_framework.views is still
loading, so this module must not import views.
"""

import binascii
from hmac import compare_digest

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS, knox_settings
from knox.signals import token_expired
from rest_framework import exceptions

from . import rows


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token check in one query: the token with its user.

    knox also reads every other token of the user on each request, to delete the expired ones; here the
    hourly `core.purge_expired_tokens` does that, and a request only checks its own token's expiry (an
    expired token is refused and deleted, as knox does).

    Every API request runs this check, so its query is written once (`core.rows`) rather than compiled
    by the ORM each time, which cost more than running it; what follows the lookup is knox's own
    `authenticate_credentials`, step by step."""

    def authenticate_credentials(self, token: bytes) -> tuple[AbstractBaseUser, AuthToken]:
        message = _("Invalid token.")
        token = token.decode("utf-8")
        for auth_token in _tokens_with_users(token[: CONSTANTS.TOKEN_KEY_LENGTH]):
            if self._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(token)
            except (TypeError, binascii.Error):
                raise exceptions.AuthenticationFailed(message) from None
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(message)

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


def _tokens_with_users(token_key: str) -> list[AuthToken]:
    """The tokens whose key is `token_key`, each with its user: knox's
    `AuthToken.objects.filter(token_key=...).select_related("user")`."""
    return rows.select_related(AuthToken, "user", 'm."token_key" = %s', [token_key])


class TokenScheme(KnoxTokenScheme):
    """The API schema names this class's scheme as knox's (drf-spectacular matches exact classes)."""

    target_class = TokenAuthentication
