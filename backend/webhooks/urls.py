from django.urls import path

from . import api

app_name = "webhooks"

urlpatterns = [
    path("webhook-endpoints/", api.WebhookEndpointListCreateView.as_view(), name="endpoint-list"),
    path("webhook-endpoints/<int:pk>/", api.WebhookEndpointDetailView.as_view(), name="endpoint-detail"),
    path("webhook-endpoints/<int:pk>/test/", api.WebhookTestView.as_view(), name="endpoint-test"),
    path(
        "webhook-endpoints/<int:pk>/deliveries/", api.WebhookDeliveryListView.as_view(), name="delivery-list"
    ),
    path(
        "webhook-endpoints/<int:pk>/deliveries/<uuid:delivery_id>/redeliver/",
        api.WebhookRedeliverView.as_view(),
        name="delivery-redeliver",
    ),
]
