"""Secrets out of every error we format: URL user info, secret query parameters, and Authorization /
api-key headers that a server (or a proxy) echoes back in an error body. Used wherever an error
message or raw server text is built, so nothing secret reaches rejects, stderr or the cache."""

from __future__ import annotations

import re

MASK = "***"
# Query parameters and header names whose values are credentials.
SECRET_NAMES = r"(?:api[-_]?key|key|token|access[-_]?token|auth|authorization|password|passwd|secret|sig|signature|x-api-key|proxy-authorization)"

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@")
_QUERY = re.compile(r"(?P<name>[?&;]" + SECRET_NAMES + r"=)[^&#\s\"']*", re.IGNORECASE)
# "Authorization: Bearer x", "authorization": "Bearer x", 'api-key': 'x', api_key=x (headers echoed as text or JSON)
_HEADER = re.compile(r"(?P<name>(?<![A-Za-z0-9_-])[\"']?" + SECRET_NAMES + r"[\"']?\s*[:=]\s*[\"']?)(?:(?:Bearer|Basic|Token)\s+)?[^\s\"',}&]+",
                     re.IGNORECASE)
_BEARER = re.compile(r"\b(?P<name>Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")  # OpenAI-style keys wherever they appear


def redact(text: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """``text`` with credentials replaced by ***; ``secrets`` are exact values to mask too (the API key)."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)
    text = _QUERY.sub(lambda m: m["name"] + MASK, text)
    text = _HEADER.sub(lambda m: m["name"] + MASK, text)
    text = _BEARER.sub(lambda m: m["name"] + MASK, text)
    return _KEYLIKE.sub(MASK, text)
