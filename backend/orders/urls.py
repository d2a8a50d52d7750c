from django.urls import path

from . import api

app_name = "orders"

urlpatterns = [
    path("restaurants/", api.RestaurantListView.as_view(), name="restaurant-list"),
    path("orders/", api.OrderListCreateView.as_view(), name="order-list"),
    path("orders/<int:pk>/", api.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<int:pk>/cancel/", api.OrderCancelView.as_view(), name="order-cancel"),
    path("orders/<int:pk>/retry/", api.OrderRetryView.as_view(), name="order-retry"),
    path("stats/throughput/", api.ThroughputView.as_view(), name="throughput"),
    path("orders/<int:pk>/override/", api.OrderOverrideView.as_view(), name="order-override"),
    path("orders/<int:pk>/share/", api.OrderShareView.as_view(), name="order-share"),
    path("alerts/", api.AlertListView.as_view(), name="alert-list"),
    path("alerts/<int:pk>/acknowledge/", api.AlertAcknowledgeView.as_view(), name="alert-acknowledge"),
]
