"""The PostgreSQL NOTIFY channels processes talk over: a contract between Flask, the workers
and the edge, so it lives here rather than with any one of them."""
from __future__ import annotations

# Registry rows inserted, deleted or moved (a trigger sends it; heartbeats do not).
REGISTRY_CHANNEL = "bokeh_workers"


def prefetch_channel(worker_id: int) -> str:
    """The channel a worker listens on for its pages' tokens (query prefetch)."""
    return f"query_prefetch_{worker_id}"

# A happiness entry was inserted; the payload is its id (a trigger sends it at commit).
ENTRIES_CHANNEL = "happiness_entries"
