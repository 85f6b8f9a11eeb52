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

# An administrator cancels a query in flight (the admin console). Every worker listens; the
# one that leads the run (or holds the waiting ticket) stops it. Payload: query_ref() below.
QUERY_CANCEL_CHANNEL = "query_admin_cancel"

# What the console calls a query: a shared run (running, or waiting for a database
# connection) or a ticket still waiting in its user's line.
RUN, TICKET = "run", "ticket"
# Ids are PostgreSQL bigints (bigserial, a sequence).
MAX_ID = 2**63 - 1


def query_ref(kind: str, ident: int) -> str:
    """'run-12' or 'ticket-7': the console's id of a query, and the cancel NOTIFY's payload."""
    if kind not in (RUN, TICKET) or not 1 <= ident <= MAX_ID:
        raise ValueError(f"not a query: {kind!r} {ident!r}")
    return f"{kind}-{ident}"


def parse_query_ref(ref: str) -> tuple[str, int] | None:
    """(kind, id) of a query_ref(), or None for anything else (it came from a URL or a NOTIFY)."""
    kind, sep, raw = ref.partition("-")
    # Digits only, no sign, no leading zero, at most 19 of them: one spelling per id.
    if not sep or kind not in (RUN, TICKET) or not (raw.isascii() and raw.isdigit()) or raw[0] == "0" \
            or len(raw) > 19:
        return None
    ident = int(raw)
    return (kind, ident) if ident <= MAX_ID else None
