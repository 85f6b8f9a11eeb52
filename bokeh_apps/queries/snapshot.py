"""Which writes a query result already contains: PostgreSQL's transaction snapshot.

A result records `pg_current_snapshot()` of the transaction it was read in; every entry
records the id of the transaction that wrote it (`txid`, migration 0004). An entry is in the
result exactly when its transaction is visible in the snapshot, so a live update is applied
to a chart only for entries its result does not hold: none missed, none twice, whatever the
order in which the commit, its notification and the result arrive.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> "Snapshot":
        """PostgreSQL's text form, `xmin:xmax:xip1,xip2,...`."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def visible(self, txid: int) -> bool:
        """Whether a transaction's writes are in this snapshot (for committed transactions:
        the only ones whose rows a reader can see; the same rule as pg_visible_in_snapshot)."""
        if txid < self.xmin:
            return True
        if txid >= self.xmax:
            return False
        return txid not in self.in_progress

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.in_progress)))}"
