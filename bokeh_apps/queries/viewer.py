"""Who asks for a query, and what they may see: the session's signed claims and its access scope.

The query service keys, authorizes and filters every query by this; it is built only from a
verified token (at autoload.js, or from the page's token for a prefetch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.tokens import SessionClaims


@dataclass(frozen=True)
class SessionInfo:
    claims: SessionClaims
    scope: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return self.claims.params
