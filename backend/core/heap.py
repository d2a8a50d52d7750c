"""Python's cyclic garbage collector, set for the project's long-running processes (the web process, the
relay), before they start their work."""

import gc

# The youngest generation is collected after this many new container objects, not Python's 700.
THRESHOLDS = (10_000, 10, 10)


def settle() -> None:
    """Freezes what startup loaded and collects young objects less often.

    Almost everything a request or a relay step creates sits in a reference cycle (DRF's fields point
    back at their serializer, the view at its request, a model instance's related-object cache at its
    relatives), so only the cyclic collector frees it, and whatever is in flight at a collection is
    promoted to an older generation. In the web process, 16 requests in flight set off a full collection
    about once a second, each walking Django's whole startup heap (~155,000 objects): order creation spent
    3.5 s of 25 in the oldest generation, in pauses of up to 170 ms, which made its p99 (bench.rest_create;
    gc callbacks). Frozen (`gc.freeze`, after a collection so no startup garbage is kept), the startup
    heap is never walked again; a larger first threshold lets most requests finish before the next
    collection looks at them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
