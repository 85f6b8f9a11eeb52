"""Query results as text, and the key that says two queries are the same.

A shared result travels between workers through PostgreSQL (query_results.payload), so
rows become JSON that keeps dates, timestamps and decimals what they were. Rows come
back as dicts, which the apps index like asyncpg records (row["x"]).
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

Row = Mapping[str, Any]

_TAGS = {"$date": dt.date.fromisoformat, "$ts": dt.datetime.fromisoformat, "$dec": decimal.Decimal}


def _default(value: Any) -> Any:
    # datetime before date: a datetime is a date too.
    if isinstance(value, dt.datetime):
        return {"$ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    raise TypeError(f"cannot share a query value of type {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        (tag, raw), = obj.items()
        if tag in _TAGS:
            return _TAGS[tag](raw)
    return obj


class Result(list):
    """A query's rows, with the snapshot they were read in (text form, see
    bokeh_apps.queries.snapshot) when the dashboard is live, so updates apply only past it."""

    def __init__(self, rows: Iterable[Any] = (), snapshot: str | None = None) -> None:
        super().__init__(rows)
        self.snapshot = snapshot


def encode(rows: Iterable[Row]) -> str:
    """Rows as JSON: column names once, then one list of values per row (and the snapshot)."""
    snapshot = getattr(rows, "snapshot", None)
    rows = list(rows)
    columns = list(rows[0].keys()) if rows else []
    data: dict[str, Any] = {"columns": columns, "rows": [list(r.values()) for r in rows]}
    if snapshot is not None:
        data["snapshot"] = snapshot
    return json.dumps(data, default=_default, separators=(",", ":"))


def decode(payload: str) -> Result:
    data = json.loads(payload, object_hook=_hook)
    columns = data["columns"]
    return Result((dict(zip(columns, values)) for values in data["rows"]), data.get("snapshot"))


def query_key(dashboard: str, sql: str, args: Sequence[Any], scope: Mapping[str, Any]) -> str:
    """Same dashboard, SQL text, arguments and access scope: the same key, and only then.

    The scope is in the key even when the SQL already filters on it: two users with
    different rights must never share a result, whatever a future query looks like.
    """
    canonical = json.dumps([dashboard, " ".join(sql.split()), list(args), dict(sorted(scope.items()))],
                           default=_default, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
