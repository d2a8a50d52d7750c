from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/operators/", consumers.OperatorsConsumer.as_asgi()),
    path("ws/couriers/", consumers.CourierConsumer.as_asgi()),
    path("ws/orders/<int:order_id>/", consumers.OrderConsumer.as_asgi()),
    path("ws/track/<str:token>/", consumers.TrackingLinkConsumer.as_asgi()),
]
