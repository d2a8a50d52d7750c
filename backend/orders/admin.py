from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Alert, Courier, Dish, Leg, Order, OrderEvent, OrderItem, Restaurant


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows the services write (history, alerts): listed and viewed here, never added, changed or deleted."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DishInline(admin.TabularInline):
    model = Dish
    extra = 0
    fields = ["name", "price", "is_active"]


@admin.register(Restaurant)
class RestaurantAdmin(admin.ModelAdmin):
    list_display = ["name", "provider", "address", "sla_minutes", "is_active"]
    list_filter = ["provider", "is_active"]
    search_fields = ["name", "address"]
    inlines = [DishInline]


@admin.register(Dish)
class DishAdmin(admin.ModelAdmin):
    list_display = ["name", "restaurant", "price", "is_active"]
    list_filter = ["restaurant", "is_active"]
    search_fields = ["name", "restaurant__name"]
    list_select_related = ["restaurant"]


@admin.register(Courier)
class CourierAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "phone", "external_id", "lat", "lng", "location_at", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "user__username", "phone", "external_id"]
    raw_id_fields = ["user"]


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    fields = ["dish", "quantity", "price"]
    raw_id_fields = ["dish"]


class LegInline(admin.TabularInline):
    model = Leg
    extra = 0
    fields = [
        "kind",
        "restaurant",
        "provider",
        "external_id",
        "provider_status",
        "status",
        "attempts",
        "next_poll_at",
        "last_error",
        "cancel_status",
    ]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    fields = ["seq", "at", "type", "from_status", "to_status", "provider_status", "source", "actor", "reason"]
    readonly_fields = fields
    can_delete = False
    ordering = ["seq"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "status", "total", "courier", "eta", "created_at", "updated_at"]
    list_filter = ["status", "legs__restaurant", "created_at"]
    search_fields = ["id", "customer__username", "delivery_address", "legs__external_id"]
    list_select_related = ["customer", "courier"]
    date_hierarchy = "created_at"
    # Status changes go through services (the status machine), never through a form.
    readonly_fields = ["status", "total", "failure_reason", "created_at", "updated_at"]
    raw_id_fields = ["customer", "courier"]
    inlines = [OrderItemInline, LegInline, ReadOnlyEventInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).distinct()


@admin.register(Leg)
class LegAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "order",
        "kind",
        "restaurant",
        "provider",
        "external_id",
        "provider_status",
        "status",
        "attempts",
        "next_poll_at",
        "last_error",
        "cancel_status",
    ]
    list_filter = ["kind", "provider", "status", "cancel_status"]
    search_fields = ["external_id", "order__id", "last_error"]
    list_select_related = ["order", "restaurant"]
    readonly_fields = [
        "order",
        "kind",
        "restaurant",
        "provider",
        "external_id",
        "provider_status",
        "status",
        # cancellation goes through services.order_cancel and the poller, never through a form
        "cancel_status",
        "cancel_requested_at",
        "created_at",
        "updated_at",
    ]


@admin.register(OrderEvent)
class OrderEventAdmin(ViewOnlyAdmin):
    """Append-only history: visible, never edited or deleted here."""

    list_display = [
        "seq",
        "at",
        "order",
        "type",
        "from_status",
        "to_status",
        "provider_status",
        "source",
        "actor",
    ]
    list_filter = ["type", "source", "to_status"]
    search_fields = ["order__id", "reason", "provider_status"]
    list_select_related = ["order", "actor"]
    date_hierarchy = "at"


@admin.register(Alert)
class AlertAdmin(ViewOnlyAdmin):
    """Read-only: alerts are raised, cleared and acknowledged by the services (the board and the API)."""

    list_display = ["id", "order", "kind", "detail", "raised_at", "cleared_at", "acknowledged_by"]
    list_filter = ["kind", ("cleared_at", admin.EmptyFieldListFilter)]
    search_fields = ["order__id", "detail", "note"]
    list_select_related = ["order", "acknowledged_by"]
