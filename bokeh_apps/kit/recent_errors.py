"""The last errors a worker's users were shown, for the admin console (through the heartbeat).

What is kept is what the chart said (a sentence written for users: no SQL, no arguments, no
token), its dashboard and when. Appended on the Bokeh loop, read on the database thread:
a bounded deque's append and list() are atomic under the GIL.
"""
from __future__ import annotations

import time
from collections import deque

# Enough to see a pattern on one screen; the full story is in the log.
KEEP = 10
# Longer sentences are cut: the heartbeat's row stays small.
MAX_CHARS = 200


class RecentErrors:
    def __init__(self, keep: int = KEEP) -> None:
        self._errors: deque[dict] = deque(maxlen=keep)
        self.total = 0

    def add(self, dashboard: str, message: str, at: float | None = None) -> None:
        self._errors.append({"at": time.time() if at is None else at, "dashboard": dashboard,
                             "message": message[:MAX_CHARS]})
        self.total += 1

    def recent(self) -> list[dict]:
        """Newest first."""
        return list(reversed(list(self._errors)))
