"""The security headers of every HTTP response xcore sends, added in one place: `secure`.

The request log's `send` wrapper (`xcore.web.requestlog.logged`), which every HTTP response of a worker passes,
core and plugin routes, static files, docs pages, redirects, 404s and every error alike, calls `secure` on the
response's start. A route may set one of these headers itself (the admin UI and the docs pages set their own
Content-Security-Policy, `page_policy`): its value is kept, and the others are added.

- `Content-Security-Policy`: `POLICY`, which allows only xcore's own origin and no framing by another site.
  A JSON answer is unaffected; an HTML page of a plugin loads its scripts and styles from files of its own.
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (for browsers without frame-ancestors),
  `Referrer-Policy: same-origin`, `Cross-Origin-Opener-Policy: same-origin`.
- `Strict-Transport-Security` only when the request came over https: directly (Granian with TLS), or from a
  trusted proxy whose X-Forwarded-Proto said so (`server.trusted_proxies`, see `xcore.web.asgi`), which is what
  `scope["scheme"]` says. Over plain http it would mean nothing, and a client could not undo it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from operator import itemgetter
from typing import Any

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HSTS_MAX_AGE = 31_536_000  # one year, in seconds

_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_HTTPS = (*_ALWAYS, (b"strict-transport-security", b"max-age=%d" % HSTS_MAX_AGE))
NAMES = frozenset(name for name, _ in _HTTPS)
_name = itemgetter(0)


def secure(headers: list[tuple[bytes, bytes]], https: bool) -> None:
    """secure adds the security headers to a response's `headers` (ASGI: a list of (name, value) byte pairs),
    HSTS only when `https`. A header the response has already keeps its value.

    Names are compared as sent, in lower case as the ASGI specification asks and as Litestar sends them: the
    test runs in C, with no Python loop, which costs every response less than lower-casing each name
    (benchmarks/README.md). A raw ASGI app of a plugin that sends, say,
    `Content-Security-Policy` in mixed case gets xcore's policy as well, and a browser enforces both: the
    stricter one wins, so nothing is ever weakened."""
    if NAMES.isdisjoint(map(_name, headers)):  # the common answer: one pass in C
        headers.extend(_HTTPS if https else _ALWAYS)
    else:  # a page with its own policy
        present = set(map(_name, headers))
        headers.extend(header for header in (_HTTPS if https else _ALWAYS) if header[0] not in present)


# What a sandboxed plugin's answers carry besides: xcore's policy, and a second one that puts any page it serves
# in a unique opaque origin (CSP `sandbox`, without allow-same-origin). Such a page's scripts run, but not as the
# app: they cannot read its cookies or storage, and their requests to it are cross-origin, carrying no session.
# Browsers enforce every policy a response has, so the plugin's own cannot loosen either.
ISOLATION: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", POLICY.encode()),
    (b"content-security-policy", b"sandbox allow-scripts allow-forms allow-popups allow-downloads"),
)


def isolate(enter: Any) -> Any:
    """isolate wraps the ASGI entry of a sandboxed plugin's routes so that every answer carries ISOLATION."""

    def call(scope: Any, receive: Any, send: Any) -> Any:
        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *ISOLATION]
            await send(message)

        return enter(scope, receive, sending)

    return call


_INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.IGNORECASE | re.DOTALL)


def page_policy(html: str, *, inline_styles: bool = False, workers: bool = False) -> str:
    """page_policy is `POLICY` for a page with inline scripts of its own: each allowed by its SHA-256 hash, so
    no other inline script runs. `inline_styles` allows inline styles (which Swagger UI and ReDoc set from their
    scripts), `workers` workers made from blob: URLs (ReDoc's search)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    policy = POLICY.replace("script-src 'self'", f"script-src 'self' {hashes}".rstrip())
    if inline_styles:
        policy = policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    if workers:
        policy += "; worker-src 'self' blob:"
    return policy
