"""Session tokens: Flask mints them, every Bokeh server checks them.

A token is Bokeh's own JWT (bokeh.util.token), signed with BOKEH_SECRET_KEY, around a
signed session id. Its payload says who the user is, which dashboard on which worker it
opens, and the parameters Flask validated. The payload is signed, not encrypted: it holds
ids and names, never secrets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bokeh.util.token import (
    check_token_signature, generate_jwt_token, generate_session_id, get_token_payload,
)

from app.access import ROLES, Principal

# Payload keys. Short, because the token travels in a websocket header.
_KEYS = ("uid", "usr", "role", "team", "lt", "dash", "params", "wkr")


class TokenError(Exception):
    """The token is missing, forged, expired, or meant for another dashboard or worker."""


@dataclass(frozen=True)
class SessionClaims:
    principal: Principal
    dashboard: str
    params: dict[str, Any]
    worker: str

    def to_payload(self) -> dict[str, Any]:
        p = self.principal
        return {"uid": p.user_id, "usr": p.username, "role": p.role, "team": p.team_id,
                "lt": p.is_loadtest, "lim": p.query_limit, "dash": self.dashboard, "params": dict(self.params), "wkr": self.worker}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "SessionClaims":
        missing = [k for k in _KEYS if k not in payload]
        if missing:
            raise TokenError(f"token lacks the site's claims ({', '.join(missing)})")
        if not isinstance(payload["uid"], int) or payload["role"] not in ROLES:
            raise TokenError("token claims are malformed")
        if payload["team"] is not None and not isinstance(payload["team"], int):
            raise TokenError("token claims are malformed")
        if not isinstance(payload["params"], dict):
            raise TokenError("token claims are malformed")
        limit = payload.get("lim")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise TokenError("token claims are malformed")
        principal = Principal(payload["uid"], str(payload["usr"]), payload["role"], payload["team"],
                              bool(payload["lt"]), limit)
        return cls(principal, str(payload["dash"]), payload["params"], str(payload["wkr"]))


def mint(claims: SessionClaims, secret: bytes, ttl_seconds: int) -> tuple[str, str]:
    """Return (session_id, token) for a new session that expires after ttl_seconds."""
    session_id = generate_session_id(secret_key=secret, signed=True)
    token = generate_jwt_token(session_id, secret_key=secret, signed=True,
                               extra_payload=claims.to_payload(), expiration=ttl_seconds)
    return session_id, token


def verify(token: str | None, secret: bytes, *, dashboard: str | None = None,
           worker: str | None = None, now: float | None = None) -> SessionClaims:
    """Check signature, expiry and claims; raise TokenError with a readable reason."""
    if not token:
        raise TokenError("a session token signed by the site is required")
    try:
        valid = check_token_signature(token, secret_key=secret, signed=True)
        payload = get_token_payload(token) if valid else None
    except Exception:  # malformed base64/JSON: forged or truncated
        raise TokenError("the session token is malformed") from None
    if not valid or payload is None:
        raise TokenError("the session token's signature is not valid")
    expiry = payload.get("session_expiry")
    if not isinstance(expiry, (int, float)):
        raise TokenError("the session token has no expiry")
    if (time.time() if now is None else now) >= expiry:
        raise TokenError("the session token has expired; reload the page")
    claims = SessionClaims.from_payload(payload)
    if dashboard is not None and claims.dashboard != dashboard:
        raise TokenError(f"the session token is for {claims.dashboard}, not {dashboard}")
    if worker is not None and claims.worker != worker:
        raise TokenError("the session token is for another worker")
    return claims
