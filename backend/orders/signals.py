"""What orders announce once a change is committed, for the layers above to act on: the tasks enqueue
work, realtime publishes positions. Receivers are connected in their AppConfig.ready(), so orders never
imports them. (Committed events themselves leave through the relay: orders.relay.subscribe; new orders'
follow-ups are sent from there too, orders.tasks.created_released.)
"""

from django.dispatch import Signal

# due, notify (lists of order ids): a batch of status changes is committed (orders.tasks.follow_up: the
# legs of `due` are sent now, the customers of `notify` told their order's new status)
orders_changed = Signal()
# order_id: the order's legs are due now (orders.tasks.submit_order calls its providers at once)
order_due = Signal()
# order_id: the customer is told of the order's status (orders.tasks.send_order_email)
order_notify = Signal()
# courier_id: the courier's position changed (realtime publishes it to operators)
courier_moved = Signal()
# order_id: every tracking link of the order was revoked (realtime closes the sockets opened through them)
tracking_revoked = Signal()
