"""REST for operators: partners' webhook endpoints, their delivery log, redelivery and test events."""

import uuid

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from orders.serializers import ConflictSerializer, ErrorSerializer

from . import services
from .models import WebhookDelivery, WebhookEndpoint
from .serializers import (
    DeliveryQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointSerializer,
)

_ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Bad input, nothing written: messages per field."),
    401: OpenApiResponse(ErrorSerializer, description="Not signed in, or an invalid token."),
    403: OpenApiResponse(ErrorSerializer, description="Signed in, but not an operator."),
    404: OpenApiResponse(ErrorSerializer, description="No such endpoint or delivery."),
    409: OpenApiResponse(ConflictSerializer, description="The endpoint or delivery state forbids this."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: _ERRORS[code] for code in codes}


@extend_schema_view(
    get=extend_schema(responses={200: WebhookEndpointSerializer(many=True), **errors(400, 401, 403, 404)}),
    post=extend_schema(
        request=WebhookEndpointSerializer,
        responses={201: WebhookEndpointCreatedSerializer, **errors(400, 401, 403)},
    ),
)
class WebhookEndpointListCreateView(generics.ListCreateAPIView):
    """Partners' endpoints. Creating one answers its signing `secret`, which is never shown again."""

    permission_classes = [IsAdminUser]
    serializer_class = WebhookEndpointSerializer
    queryset = WebhookEndpoint.objects.all()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        serializer = WebhookEndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(actor=request.user, **serializer.validated_data)
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(responses={200: WebhookEndpointSerializer, **errors(401, 403, 404)}),
    patch=extend_schema(
        request=WebhookEndpointSerializer,
        responses={200: WebhookEndpointSerializer, **errors(400, 401, 403, 404)},
    ),
    delete=extend_schema(responses={204: None, **errors(401, 403, 404)}),
)
class WebhookEndpointDetailView(generics.RetrieveUpdateDestroyAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = WebhookEndpointSerializer
    queryset = WebhookEndpoint.objects.all()
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def perform_update(self, serializer: BaseSerializer) -> None:
        services.endpoint_update(endpoint=serializer.instance, **serializer.validated_data)


class WebhookDeliveryListView(generics.ListAPIView):
    """The endpoint's delivery log, newest first, each with its attempts: status code, duration, error,
    and when it is tried next. `?status=pending|delivered|failed`, `?type=`."""

    permission_classes = [IsAdminUser]
    serializer_class = WebhookDeliverySerializer

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        endpoint = generics.get_object_or_404(WebhookEndpoint.objects.all(), pk=self.kwargs["pk"])
        query = DeliveryQuerySerializer(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return (
            WebhookDelivery.objects.filter(endpoint=endpoint, **query.filters())
            .prefetch_related("tries")
            .order_by("-created_at", "-seq")
        )

    @extend_schema(
        parameters=[DeliveryQuerySerializer],
        responses={200: WebhookDeliverySerializer(many=True), **errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)


class WebhookRedeliverView(APIView):
    """Send a delivery again, with the same id (receivers drop what they already have)."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer, **errors(401, 403, 404, 409)})
    def post(self, request: Request, pk: int, delivery_id: uuid.UUID) -> Response:
        delivery = generics.get_object_or_404(
            WebhookDelivery.objects.select_related("endpoint"), endpoint_id=pk, pk=delivery_id
        )
        delivery = services.delivery_redeliver(delivery=delivery)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookTestView(APIView):
    """Send a `webhook.test` event now (disabled endpoints too): its delivery shows how it went."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer, **errors(401, 403, 404)})
    def post(self, request: Request, pk: int) -> Response:
        endpoint = generics.get_object_or_404(WebhookEndpoint.objects.all(), pk=pk)
        delivery = services.endpoint_send_test(endpoint=endpoint)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
