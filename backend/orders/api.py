"""REST endpoints: thin views that validate input, call a service or selector, and serialise."""

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .models import Order
from .serializers import (
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderSerializer,
    OverrideSerializer,
    ReasonSerializer,
    RestaurantSerializer,
    ThroughputQuerySerializer,
    ThroughputSerializer,
)
from .status import OrderStatus


class RestaurantListView(generics.ListAPIView):
    serializer_class = RestaurantSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet:
        return selectors.restaurant_list()


def _parse_statuses(raw: str | None) -> list[str]:
    if not raw:
        return []
    statuses = [value.strip() for value in raw.split(",") if value.strip()]
    unknown = sorted(set(statuses) - set(OrderStatus.values))
    if unknown:
        raise serializers.ValidationError(
            {
                "status": [
                    f"Unknown status {', '.join(unknown)}; expected one of {', '.join(OrderStatus.values)}."
                ]
            }
        )
    return statuses


class OrderListCreateView(generics.ListAPIView):
    serializer_class = OrderSerializer

    def get_queryset(self) -> QuerySet[Order]:
        statuses = _parse_statuses(self.request.query_params.get("status"))
        return selectors.order_list(user=self.request.user, statuses=statuses)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                description="Comma-separated statuses: " + ", ".join(OrderStatus.values),
            )
        ]
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=OrderCreateSerializer, responses={201: OrderSerializer})
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
        )
        order = selectors.order_list(user=request.user).get(pk=order.pk)
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderDetailView(generics.RetrieveAPIView):
    serializer_class = OrderDetailSerializer

    def get_queryset(self) -> QuerySet[Order]:
        return selectors.order_detail_queryset(user=self.request.user)


class _OrderActionView(APIView):
    """Base for POST actions on one order the user can see (404 otherwise)."""

    def get_order(self, pk: int) -> Order:
        return generics.get_object_or_404(selectors.orders_visible_to(self.request.user), pk=pk)

    def respond(self, order: Order) -> Response:
        order = selectors.order_detail_queryset(user=self.request.user).get(pk=order.pk)
        return Response(OrderDetailSerializer(order).data)


class OrderCancelView(_OrderActionView):
    @extend_schema(request=ReasonSerializer, responses={200: OrderDetailSerializer})
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

    @extend_schema(request=None, responses={200: OrderDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        order = self.get_order(pk)
        services.order_retry(order_id=order.pk, actor=request.user)
        return self.respond(order)


class ThroughputView(APIView):
    """Orders created and delivered per minute, for the dashboard's chart."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[OpenApiParameter("minutes", OpenApiTypes.INT, description="1 to 240, default 60")],
        responses={200: ThroughputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        serializer = ThroughputQuerySerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        return Response(selectors.throughput_per_minute(minutes=serializer.validated_data["minutes"]))


class OrderOverrideView(_OrderActionView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=OverrideSerializer, responses={200: OrderDetailSerializer})
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
