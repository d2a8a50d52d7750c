"""REST endpoints: thin views that validate input, call a service or selector, and serialise."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import logs
from core.auth import TOO_MANY
from core.parsers import JSONParser
from core.throttles import OrderCreateThrottle, ShareThrottle

from . import alerts, selectors, services
from .disclosure import sees_internals
from .models import Alert, Order
from .serializers import (
    AcknowledgeSerializer,
    AlertQuerySerializer,
    AlertSerializer,
    ConflictSerializer,
    ErrorSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderQuerySerializer,
    OrderSerializer,
    OverrideSerializer,
    PublicOrderDetailSerializer,
    PublicOrderSerializer,
    ReasonSerializer,
    RestaurantSerializer,
    ThroughputQuerySerializer,
    ThroughputSerializer,
    TrackingLinkSerializer,
    represent,
)
from .status import OrderStatus

# Every answer an operation can give is in the schema, so clients (and the schema fuzz test,
# orders/tests/test_api_fuzz.py) can rely on it: bad input, not signed in, not allowed, not found, conflict.
_ERROR_RESPONSES = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Bad input, nothing written: messages per field, e.g. {"items": [{"quantity": [...]}]}.',
    ),
    401: OpenApiResponse(ErrorSerializer, description="Not signed in, or an invalid token."),
    403: OpenApiResponse(ErrorSerializer, description="Signed in, but not allowed to do this."),
    404: OpenApiResponse(ErrorSerializer, description="No such order among those this user may see."),
    409: OpenApiResponse(ConflictSerializer, description="The order's state forbids this action."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented error answers of an operation, for `extend_schema(responses=...)`."""
    return {code: _ERROR_RESPONSES[code] for code in codes}


# Operators get orders whole, customers and couriers their public shape (orders.disclosure). The schema
# offers both; the public objects are closed (serializers.ClosedSchema), so an answer matches one only.
def _for_user(full: type[serializers.Serializer], public: type[serializers.Serializer]) -> OpenApiResponse:
    """An answer whose shape depends on who asks: `full` for operators, `public` for everyone else."""
    full_name, public_name = (
        full.__name__.removesuffix("Serializer"),
        public.__name__.removesuffix("Serializer"),
    )
    return OpenApiResponse(
        PolymorphicProxySerializer(
            component_name=f"{full_name}ForUser", serializers=[full, public], resource_type_field_name=None
        ),
        description=f"Operators get `{full_name}`; customers and couriers `{public_name}`, without provider "
        "ids, errors, alerts or staff names.",
    )


ORDER_FOR_USER = _for_user(OrderSerializer, PublicOrderSerializer)
ORDER_DETAIL_FOR_USER = _for_user(OrderDetailSerializer, PublicOrderDetailSerializer)


def order_serializer_for(user: AbstractBaseUser, *, detail: bool = False) -> type[serializers.Serializer]:
    """The order shape `user` gets: whole for operators, public for everyone else."""
    if sees_internals(user):
        return OrderDetailSerializer if detail else OrderSerializer
    return PublicOrderDetailSerializer if detail else PublicOrderSerializer


class RestaurantListView(generics.ListAPIView):
    serializer_class = RestaurantSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet:
        return selectors.restaurant_list()

    @extend_schema(responses={200: RestaurantSerializer, **errors(401)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)


def _parse_statuses(raw: str | None) -> list[str]:
    """`?status=cooking,ready` → those statuses; absent → no filter; an empty or unknown one → 400."""
    if raw is None:
        return []
    statuses = [value.strip() for value in raw.split(",")]
    unknown = sorted(set(statuses) - set(OrderStatus.values))
    if unknown:
        raise serializers.ValidationError(
            {
                "status": [
                    f"Unknown status {', '.join(map(repr, unknown))}; "
                    f"expected one of {', '.join(OrderStatus.values)}."
                ]
            }
        )
    return statuses


class OrderListCreateView(generics.ListAPIView):
    # An order's `items` is a list of objects, which form encodings cannot carry: JSON only (the schema
    # then offers only JSON too, and a form body gets 415).
    parser_classes = [JSONParser]
    throttle_classes = [OrderCreateThrottle]  # POST only

    def get_queryset(self) -> QuerySet[Order]:
        statuses = _parse_statuses(self.request.query_params.get("status"))
        # A plain dict, not the QueryDict: DRF would take an empty `?q=` for an absent one.
        filters = OrderQuerySerializer(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        return selectors.order_list(user=self.request.user, statuses=statuses, **filters.validated_data)

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return order_serializer_for(self.request.user)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status",
                {"type": "array", "items": {"type": "string", "enum": OrderStatus.values}, "minItems": 1},
                style="form",
                explode=False,  # ?status=cooking,ready
                description="Only orders in one of these statuses (comma-separated).",
            ),
            OrderQuerySerializer,
        ],
        responses={
            200: ORDER_FOR_USER,
            **errors(400, 401),
            404: OpenApiResponse(ErrorSerializer, description="No such page."),
        },
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=OrderCreateSerializer, responses={201: ORDER_FOR_USER, **errors(400, 401), 429: TOO_MANY}
    )
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        order = services.order_create(
            customer=request.user,
            items=[
                services.ItemInput(dish=item["dish"], quantity=item["quantity"]) for item in data["items"]
            ],
            delivery_address=data["delivery_address"],
            eta=data.get("eta"),
            phone=data["phone"],
            loaded=True,  # answered with what was just written (items, legs, no alerts yet): no re-read
        )
        logs.bind(order_id=order.pk)  # the rest of the request's log lines name the new order
        return Response(represent(order_serializer_for(request.user), order), status=status.HTTP_201_CREATED)


class OrderDetailView(generics.RetrieveAPIView):
    def get_queryset(self) -> QuerySet[Order]:
        return selectors.order_detail_queryset(user=self.request.user)

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return order_serializer_for(self.request.user, detail=True)

    @extend_schema(responses={200: ORDER_DETAIL_FOR_USER, **errors(401, 404)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        logs.bind(order_id=kwargs["pk"])
        return super().get(request, *args, **kwargs)


class _OrderActionView(APIView):
    """Base for POST actions on one order the user can see (404 otherwise)."""

    def get_order(self, pk: int) -> Order:
        logs.bind(order_id=pk)  # the request's log lines name the order it acts on
        return generics.get_object_or_404(selectors.orders_visible_to(self.request.user), pk=pk)

    def respond(self, order: Order) -> Response:
        order = selectors.order_detail_queryset(user=self.request.user).get(pk=order.pk)
        return Response(represent(order_serializer_for(self.request.user, detail=True), order))


class OrderCancelView(_OrderActionView):
    @extend_schema(
        request=ReasonSerializer, responses={200: ORDER_DETAIL_FOR_USER, **errors(400, 401, 403, 404, 409)}
    )
    def post(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        serializer = ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.order_cancel(
            order_id=order.pk, actor=request.user, reason=serializer.validated_data["reason"]
        )
        return self.respond(order)


class OrderRetryView(_OrderActionView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={200: OrderDetailSerializer, **errors(401, 403, 404, 409)})
    def post(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        services.order_retry(order_id=order.pk, actor=request.user)
        return self.respond(order)


class ThroughputView(APIView):
    """Orders created and delivered per minute, for the dashboard's chart."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[ThroughputQuerySerializer],
        responses={200: ThroughputSerializer(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        serializer = ThroughputQuerySerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        return Response(selectors.throughput_per_minute(minutes=serializer.validated_data["minutes"]))


class OrderOverrideView(_OrderActionView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=OverrideSerializer, responses={200: OrderDetailSerializer, **errors(400, 401, 403, 404, 409)}
    )
    def post(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        serializer = OverrideSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.order_override_status(
            order_id=order.pk,
            actor=request.user,
            to_status=serializer.validated_data["status"],
            reason=serializer.validated_data["reason"],
        )
        return self.respond(order)


class AlertListView(generics.ListAPIView):
    """Operators' alerts, newest first: `?open=true` for those that still need someone."""

    serializer_class = AlertSerializer
    permission_classes = [IsAdminUser]

    def get_queryset(self) -> QuerySet[Alert]:
        filters = AlertQuerySerializer(data=self.request.query_params.dict())  # `?kind=` is a 400
        filters.is_valid(raise_exception=True)
        return selectors.alert_list(**{k: v for k, v in filters.validated_data.items() if v is not None})

    @extend_schema(
        parameters=[AlertQuerySerializer],
        responses={
            200: AlertSerializer,
            **errors(400, 401, 403),
            404: OpenApiResponse(ErrorSerializer, description="No such page."),
        },
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)


class AlertAcknowledgeView(APIView):
    """An operator takes the alert on, with an optional note; recorded in the order's history."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=AcknowledgeSerializer,
        responses={
            200: AlertSerializer,
            **errors(400, 401, 403),
            404: _ERROR_RESPONSES[404],
            409: _ERROR_RESPONSES[409],
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        generics.get_object_or_404(Alert.objects.all(), pk=pk)
        serializer = AcknowledgeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        alerts.alert_acknowledge(alert_id=pk, actor=request.user, note=serializer.validated_data["note"])
        return Response(AlertSerializer(selectors.alert_list().get(pk=pk)).data)


class OrderShareView(APIView):
    """Shareable tracking links of one order: its customer or an operator makes one, or revokes them all.

    Anyone else gets 404, as for orders they cannot see (a courier sees the order but may not share it).
    """

    throttle_classes = [ShareThrottle]  # POST only

    def get_order(self, pk: int) -> Order:
        logs.bind(order_id=pk)
        return generics.get_object_or_404(selectors.orders_shareable_by(self.request.user), pk=pk)

    @extend_schema(request=None, responses={201: TrackingLinkSerializer, **errors(401, 404), 429: TOO_MANY})
    def post(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        token, link = services.tracking_link_create(order_id=order.pk, actor=request.user)
        body = {"url": reverse("track-shared", args=[token]), "expires_at": link.expires_at}
        return Response(TrackingLinkSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={
            204: OpenApiResponse(
                description="Every link of the order revoked; their pages and sockets close."
            ),
            **errors(401, 404),
        },
    )
    def delete(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        services.tracking_links_revoke(order_id=order.pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
