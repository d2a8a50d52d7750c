"""Keeping our legs in step with the providers' sub-orders.

- `leases`: which legs are due, claimed by which poller (SKIP LOCKED leases), and the batch bookkeeping
  of a tick (external ids, failures cleared, next polls) in one statement each.
- `tick`: one poll tick, claiming due legs batch by batch and calling their providers concurrently.
- `answers`: what a provider said about a sub-order, applied through the services; the one entry for
  poll answers and webhooks alike.

Layering: sync calls the services (which own every order change and its event) and the providers;
nothing below imports sync.
"""
