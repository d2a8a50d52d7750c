"""`POST /api/realtime/ticket/`: a single-use ticket to open a WebSocket with (realtime.tickets)."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import TOO_MANY
from core.throttles import TicketThrottle

from . import tickets


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Open the socket with `?ticket=<ticket>`: once, and soon.")
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid.")


class TicketView(APIView):
    """Any signed-in user (token or session) may take a ticket; the socket then decides what they see."""

    throttle_classes = [TicketThrottle]

    @extend_schema(
        request=None,
        responses={
            200: TicketSerializer,
            401: OpenApiResponse(description="Not signed in, or an invalid token."),
            429: TOO_MANY,
        },
    )
    def post(self, request: Request) -> Response:
        ticket = tickets.issue(request.user.pk)
        return Response({"ticket": ticket, "expires_in": settings.REALTIME_TICKET_SECONDS})
