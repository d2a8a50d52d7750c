"""The admin: the catalogue is edited here; orders, legs and their history are only looked at.

Nothing here writes an order's status, courier, times or provider bookkeeping. Operators change those
through the actions on orders (cancel, retry, override, reassign a courier), each carried out by its
service in orders.services, so every change appends its OrderEvent and reaches the sockets through the
relay, as it does from the dashboard and the API.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied as AdminPermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import selectors, services
from .errors import DomainError
from .models import Alert, Courier, Dish, Leg, Order, OrderEvent, OrderItem, Restaurant
from .status import ACTIVE, OrderStatus

logger = logging.getLogger(__name__)


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows the services write: listed and viewed here, never added, changed or deleted."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ViewOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- the catalogue ------------------------------------------------------------------------------------


class DishInline(admin.TabularInline):
    model = Dish
    extra = 0
    fields = ["name", "price", "is_active"]


@admin.register(Restaurant)
class RestaurantAdmin(admin.ModelAdmin):
    """Where a kitchen is (lat/lng, both or neither) puts it on the map and starts its couriers' routes."""

    list_display = ["name", "provider", "address", "lat", "lng", "sla_minutes", "is_active"]
    list_filter = ["provider", "is_active"]
    search_fields = ["name", "address"]
    fields = ["name", "provider", "address", ("lat", "lng"), "sla_minutes", "is_active"]
    inlines = [DishInline]


@admin.register(Dish)
class DishAdmin(admin.ModelAdmin):
    list_display = ["name", "restaurant", "price", "is_active"]
    list_filter = ["restaurant", "is_active"]
    search_fields = ["name", "restaurant__name"]
    list_select_related = ["restaurant"]


@admin.register(Courier)
class CourierAdmin(admin.ModelAdmin):
    """A courier's profile is edited here; the position is the one the courier app or provider reported."""

    list_display = ["name", "user", "phone", "external_id", "lat", "lng", "location_at", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "user__username", "phone", "external_id"]
    raw_id_fields = ["user"]
    readonly_fields = ["lat", "lng", "location_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Courier | None = None) -> bool:
        """A courier carrying an active order is not deleted (its orders would silently lose their courier):
        reassign them first, or make the courier inactive."""
        if obj is not None and obj.orders.filter(status__in=ACTIVE).exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one by one, each checked as above
        return actions


# --- operators' actions on orders, each through its service --------------------------------------------


class CancelForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), required=False, widget=forms.Textarea(attrs={"rows": 3}))


class OverrideForm(forms.Form):
    to_status = forms.ChoiceField(label=_("New status"), choices=OrderStatus.choices)
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 3}))


class ReassignForm(forms.Form):
    courier = forms.ModelChoiceField(label=_("Courier"), queryset=selectors.courier_list())
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 3}))


Run = Callable[[int, AbstractBaseUser, dict[str, Any]], OrderEvent]


@dataclass(frozen=True)
class OrderAction:
    """An operator action on orders: its page title, its form (None: nothing to ask), its service call,
    and the message naming the orders it succeeded on."""

    name: str
    title: str
    form: type[forms.Form] | None
    run: Run
    done: str


def _cancel(order_id: int, actor: AbstractBaseUser, data: dict[str, Any]) -> OrderEvent:
    return services.order_cancel(order_id=order_id, actor=actor, reason=data["reason"])


def _retry(order_id: int, actor: AbstractBaseUser, data: dict[str, Any]) -> OrderEvent:
    return services.order_retry(order_id=order_id, actor=actor)


def _override(order_id: int, actor: AbstractBaseUser, data: dict[str, Any]) -> OrderEvent:
    return services.order_override_status(
        order_id=order_id, actor=actor, to_status=data["to_status"], reason=data["reason"]
    )


def _reassign(order_id: int, actor: AbstractBaseUser, data: dict[str, Any]) -> OrderEvent:
    return services.order_reassign_courier(
        order_id=order_id, courier_id=data["courier"].pk, actor=actor, reason=data["reason"]
    )


ACTIONS: dict[str, OrderAction] = {
    action.name: action
    for action in (
        OrderAction("cancel", _("Cancel order"), CancelForm, _cancel, _("Cancelled: %(orders)s.")),
        OrderAction("retry", _("Retry provider calls"), None, _retry, _("Retried: %(orders)s.")),
        OrderAction("override", _("Override status"), OverrideForm, _override, _("Overridden: %(orders)s.")),
        OrderAction("reassign", _("Reassign courier"), ReassignForm, _reassign, _("Reassigned: %(orders)s.")),
    )
}
# Names the action page's submit button: the changelist's second POST carries it with the form.
CONFIRM = "_confirm"

ACTION_PAGE = """{% extends "admin/base_site.html" %}
{% load i18n admin_urls %}
{% block bodyclass %}{{ block.super }} app-{{ opts.app_label }} model-{{ opts.model_name }}{% endblock %}
{% block breadcrumbs %}
<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">{% translate 'Home' %}</a>
&rsaquo; <a href="{% url 'admin:app_list' app_label=opts.app_label %}">{{ opts.app_config.verbose_name }}</a>
&rsaquo; <a href="{% url opts|admin_urlname:'changelist' %}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; {{ title }}
</div>
{% endblock %}
{% block content %}
<ul class="order-action-orders">{% for order in orders %}<li>{{ order }}</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
{% for name, value in hidden %}<input type="hidden" name="{{ name }}" value="{{ value }}">{% endfor %}
{% if form %}{{ form.non_field_errors }}
<fieldset class="module aligned">
{% for field in form %}
<div class="form-row">{{ field.errors }}{{ field.label_tag }} {{ field }}</div>
{% endfor %}
</fieldset>{% endif %}
<div class="submit-row">
<input type="submit" class="default" name="{{ confirm }}" value="{{ title }}">
<a href="{{ back }}" class="button cancel-link">{% translate "No, take me back" %}</a>
</div>
</form>
{% endblock %}
"""


@cache
def _action_page() -> Any:
    """The page compiled once, on first use (the template engines are ready by then)."""
    return engines["django"].from_string(ACTION_PAGE)


# --- orders ---------------------------------------------------------------------------------------------


class OrderItemInline(ViewOnlyInline):
    """What was ordered is fixed with the order (its total, its legs): shown, never edited."""

    model = OrderItem
    fields = ["dish", "quantity", "price"]
    readonly_fields = fields


class LegInline(ViewOnlyInline):
    model = Leg
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


class ReadOnlyEventInline(ViewOnlyInline):
    model = OrderEvent
    fields = ["seq", "at", "type", "from_status", "to_status", "provider_status", "source", "actor", "reason"]
    readonly_fields = fields
    ordering = ["seq"]


ORDER_FIELDS = [field.name for field in Order._meta.fields if field.name != "id"]
# The one field a form may change, and only while no provider has the order: the delivery is ordered with
# the address as it stands when every kitchen is ready. Everything else changes through the services.
EDITABLE_WHILE_SCHEDULED = frozenset({"delivery_address"})


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Orders are created through the API (services.order_create) and changed through the actions."""

    list_display = ["id", "customer", "status", "total", "courier", "eta", "created_at", "updated_at"]
    list_filter = ["status", "legs__restaurant", "created_at"]
    search_fields = ["id", "customer__username", "delivery_address", "legs__external_id"]
    list_select_related = ["customer", "courier"]
    date_hierarchy = "created_at"
    inlines = [OrderItemInline, LegInline, ReadOnlyEventInline]
    actions = ["cancel_orders", "retry_orders", "override_orders", "reassign_orders"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).distinct()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # its history, its providers' sub-orders and the live boards would lose it silently

    def get_fields(self, request: HttpRequest, obj: Order | None = None) -> list[str]:
        return ["operator_actions", *ORDER_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj: Order | None = None) -> list[str]:
        editable = EDITABLE_WHILE_SCHEDULED if obj is not None and obj.status == OrderStatus.SCHEDULED else ()
        return ["operator_actions", *(name for name in ORDER_FIELDS if name not in editable)]

    def save_model(self, request: HttpRequest, obj: Order, form: forms.ModelForm, change: bool) -> None:
        """Writes only what the form may change, and only while the order is still scheduled. A whole-row
        save would write back the status or courier the pipeline changed since the form was loaded."""
        changed = {name: getattr(obj, name) for name in form.changed_data if name in EDITABLE_WHILE_SCHEDULED}
        if not changed:
            return
        updated = Order.objects.filter(pk=obj.pk, status=OrderStatus.SCHEDULED).update(
            **changed, updated_at=timezone.now()
        )
        if not updated:
            message = gettext("Order #%(id)s was sent to its providers meanwhile: it was not changed.")
            self.message_user(request, message % {"id": obj.pk}, messages.ERROR)

    @admin.display(description=_("Actions"))
    def operator_actions(self, order: Order) -> SafeString:
        return format_html_join(
            " ",
            '<a class="button" href="{}">{}</a>',
            (
                (reverse("admin:orders_order_operate", args=[order.pk, action.name]), action.title)
                for action in ACTIONS.values()
            ),
        )

    # --- the actions: from the changelist (selected orders) and from an order's page ---------------------

    @admin.action(description=_("Cancel selected orders"), permissions=["change"])
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> HttpResponse | None:
        return self._changelist_action(request, queryset, ACTIONS["cancel"])

    @admin.action(description=_("Retry selected orders"), permissions=["change"])
    def retry_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> HttpResponse | None:
        return self._changelist_action(request, queryset, ACTIONS["retry"])

    @admin.action(description=_("Override the status of selected orders"), permissions=["change"])
    def override_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> HttpResponse | None:
        return self._changelist_action(request, queryset, ACTIONS["override"])

    @admin.action(description=_("Reassign selected orders to a courier"), permissions=["change"])
    def reassign_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> HttpResponse | None:
        return self._changelist_action(request, queryset, ACTIONS["reassign"])

    def get_urls(self) -> list[URLPattern]:
        operate = path(
            "<path:object_id>/operate/<slug:action>/",
            self.admin_site.admin_view(self.operate_view),
            name="orders_order_operate",
        )
        return [operate, *super().get_urls()]  # before the catch-all `<path:object_id>/`

    def operate_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """One order's action: the form (or a confirmation) on GET, the service call on POST."""
        order = self.get_object(request, object_id)
        if order is None or action not in ACTIONS:
            raise Http404
        if not self.has_change_permission(request, order):
            raise AdminPermissionDenied
        spec = ACTIONS[action]
        back = reverse("admin:orders_order_change", args=[order.pk])
        form = None
        if spec.form is not None:
            form = spec.form(request.POST) if request.method == "POST" else spec.form()
        if request.method == "POST" and (form is None or form.is_valid()):
            self._perform(request, spec, [order.pk], form.cleaned_data if form is not None else {})
            return HttpResponseRedirect(back)
        return self._action_page(request, spec, form, orders=[order], hidden=[], back=back)

    def _changelist_action(
        self, request: HttpRequest, queryset: QuerySet[Order], spec: OrderAction
    ) -> HttpResponse | None:
        """The selected orders: carried out at once when there is nothing to ask, else after the form."""
        orders = list(queryset.order_by("pk"))
        form = None
        if spec.form is not None:
            form = spec.form(request.POST) if CONFIRM in request.POST else spec.form()
        if form is None or (form.is_bound and form.is_valid()):
            self._perform(request, spec, [order.pk for order in orders], form.cleaned_data if form else {})
            return None  # back to the changelist, which shows the messages
        hidden = [("action", f"{spec.name}_orders")]  # the admin action of each is named so
        hidden += [(helpers.ACTION_CHECKBOX_NAME, str(order.pk)) for order in orders]
        back = request.get_full_path()
        return self._action_page(request, spec, form, orders=orders, hidden=hidden, back=back)

    def _perform(
        self, request: HttpRequest, spec: OrderAction, order_ids: Iterable[int], data: dict[str, Any]
    ) -> None:
        """Each order through the service on its own: a refusal is reported and leaves the others going."""
        done = []
        for order_id in order_ids:
            try:
                spec.run(order_id, request.user, data)
            except DomainError as error:
                logger.info("Admin %s of order %s refused (%s): %s", spec.name, order_id, request.user, error)
                self.message_user(request, f"#{order_id}: {error}", messages.ERROR)
            else:
                done.append(f"#{order_id}")
        if done:
            self.message_user(request, spec.done % {"orders": ", ".join(done)}, messages.SUCCESS)

    def _action_page(
        self,
        request: HttpRequest,
        spec: OrderAction,
        form: forms.Form | None,
        *,
        orders: list[Order],
        hidden: list[tuple[str, str]],
        back: str,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": spec.title,
            "orders": orders,
            "form": form,
            "hidden": hidden,
            "confirm": CONFIRM,
            "back": back,
            "media": self.media + (form.media if form is not None else forms.Media()),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, _action_page(), context)


@admin.register(Leg)
class LegAdmin(ViewOnlyAdmin):
    """Provider bookkeeping (status, attempts, polling, lease, cancellation) is written by the services and
    the poller only; an operator retries or cancels the order instead."""

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
