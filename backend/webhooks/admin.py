"""Partners' endpoints in the admin: add (the secret is shown once), change, switch off and on, send a
test event; the delivery log is read-only, with redelivery as an action."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from orders.errors import DomainError
from orders.models import OrderEvent

from . import services
from .models import ALL_EVENTS, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENT_CHOICES = [(ALL_EVENTS, _("Every event")), *OrderEvent.Type.choices]


class WebhookEndpointForm(forms.ModelForm):
    url = forms.CharField(label=_("URL"), max_length=500)
    events = forms.MultipleChoiceField(choices=EVENT_CHOICES, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "events", "active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        services.validate_url(url)
        return url

    def clean_events(self) -> list[str]:
        events = self.cleaned_data["events"]
        return [ALL_EVENTS] if ALL_EVENTS in events else sorted(events)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "description", "active", "events", "failing_since", "disabled_reason"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    readonly_fields = ["failing_since", "disabled_at", "disabled_reason", "created_by", "created_at"]
    actions = ["send_test_event"]

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool) -> None:
        if change:
            services.endpoint_update(
                endpoint=obj, **{name: form.cleaned_data[name] for name in form.changed_data}
            )
            return
        created = services.endpoint_create(
            url=obj.url, events=obj.events, description=obj.description, actor=request.user
        )
        obj.pk, obj.secret = created.pk, created.secret
        messages.warning(
            request,
            gettext("Signing secret of %(url)s, shown this once: %(secret)s")
            % {"url": created.url, "secret": created.secret},
        )

    @admin.action(description=_("Send a test event"))
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_send_test(endpoint=endpoint)
        self.message_user(
            request, gettext("Test event queued for %(count)d endpoints.") % {"count": len(queryset)}
        )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["at", "status_code", "duration_ms", "error", "next_retry_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "endpoint",
        "type",
        "seq",
        "order",
        "status",
        "attempts",
        "last_status_code",
    ]
    list_filter = ["status", "type", "endpoint"]
    list_select_related = ["endpoint"]
    search_fields = ["=id", "=order__id"]
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]
    exclude = ["data"]
    readonly_fields = [
        "id",
        "endpoint",
        "event",
        "order",
        "seq",
        "type",
        "occurred_at",
        "status",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description=_("Deliver again"))
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        done = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                services.delivery_redeliver(delivery=delivery)
                done += 1
            except DomainError as error:
                self.message_user(request, f"{delivery.pk}: {error}", messages.WARNING)
        self.message_user(request, gettext("%(count)d deliveries queued again.") % {"count": done})
