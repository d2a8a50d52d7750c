"""Sign-in for API clients: expiring, revocable tokens (django-rest-knox), and the limits around them.

`POST /api/auth/token/` trades a username and password for a token that expires after
AUTH_TOKEN_TTL_HOURS, one per device (the oldest goes beyond AUTH_TOKEN_LIMIT_PER_USER). knox stores only
a hash of it. `POST /api/auth/logout/` revokes the token the request carries, `/logout-all/` every token
of its user. Sign-in is limited per client address (each attempt costs a password hash) and, for failed
attempts, per username, whatever the address.
"""

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox import views as knox_views
from knox.models import AuthToken
from rest_framework import serializers
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import limits
from .authentication import TokenAuthentication
from .fields import JSONCharField
from .throttles import SignInThrottle, client_ip

logger = logging.getLogger(__name__)

FAILURES = "signin-failures"


class SignInSerializer(serializers.Serializer):
    username = JSONCharField(max_length=150)
    password = JSONCharField(max_length=1024, trim_whitespace=False, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True, help_text="Send it as `Authorization: Token <token>`.")
    expiry = serializers.DateTimeField(read_only=True, help_text="When the token stops working.")


class RetryLaterSerializer(serializers.Serializer):
    detail = serializers.CharField()


TOO_MANY = OpenApiResponse(
    RetryLaterSerializer, description="Too many attempts: retry after `Retry-After` s."
)


def issue_token(user: Any) -> tuple[str, datetime]:
    """A new token for `user` (revoking their oldest beyond the per-user limit); the token and its expiry."""
    keep = settings.AUTH_TOKEN_LIMIT_PER_USER - 1
    oldest = AuthToken.objects.filter(user=user).order_by("-created").values_list("pk", flat=True)[keep:]
    AuthToken.objects.filter(pk__in=list(oldest)).delete()
    instance, token = AuthToken.objects.create(user=user)
    return token, instance.expiry


class TokenView(APIView):
    """`{username, password}` → `{"token", "expiry"}`.

    Open to anyone without authenticating the request: a client whose old token expired must still be
    able to sign in again, not get 401 "Invalid token" from the endpoint that issues new ones.
    """

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = [SignInThrottle]

    @extend_schema(
        request=SignInSerializer,
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(description="Missing fields, or wrong username or password."),
            429: TOO_MANY,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SignInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username, password = serializer.validated_data["username"], serializer.validated_data["password"]
        request._request.sign_in_address_counted = True  # by SignInThrottle, which also counts bad bodies
        user = authenticate(request._request, username=username, password=password)
        if user is None:
            wait = getattr(request._request, "sign_in_retry_after", None)
            if wait is not None:
                raise Throttled(wait, detail="Too many sign-in attempts; try again later.")
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        token, expiry = issue_token(user)
        user_logged_in.send(sender=user.__class__, request=request._request, user=user)
        return Response(TokenSerializer({"token": token, "expiry": expiry}).data)


class LimitedModelBackend(ModelBackend):
    """Django's username and password check behind the sign-in limits, whichever door is used: the API,
    the dashboard's login page or the admin's. Over a limit, no password is hashed: the attempt is refused
    (`request.sign_in_retry_after` says for how long; the API answers 429 with it)."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if request is None or username is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        wait = None
        if not getattr(request, "sign_in_address_counted", False):
            rate = limits.parse_rate(settings.THROTTLE_SIGNIN_PER_IP)
            wait = limits.hit("signin-ip", client_ip(request), rate)
        failures = limits.parse_rate(settings.THROTTLE_SIGNIN_FAILURES_PER_USERNAME)
        wait = wait or limits.blocked_for(FAILURES, username, failures)
        if wait is not None:
            logger.warning(
                "Sign-in as %r from %s refused: over the sign-in limits", username, client_ip(request)
            )
            request.sign_in_retry_after = wait
            raise PermissionDenied  # ends authenticate() for every backend
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            limits.hit(FAILURES, username, failures)
        else:
            limits.reset(FAILURES, username)
        return user


class LogoutView(knox_views.LogoutView):
    """Revokes the token this request carries."""

    authentication_classes = [TokenAuthentication]  # the project's check (knox's view names knox's)

    @extend_schema(request=None, responses={204: None, 401: OpenApiResponse(description="No valid token.")})
    def post(self, request: Request, format: Any = None) -> Response:
        return super().post(request, format)


class LogoutAllView(knox_views.LogoutAllView):
    """Revokes every token of this request's user (every device)."""

    authentication_classes = [TokenAuthentication]

    @extend_schema(request=None, responses={204: None, 401: OpenApiResponse(description="No valid token.")})
    def post(self, request: Request, format: Any = None) -> Response:
        return super().post(request, format)
