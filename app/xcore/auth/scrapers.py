"""Scraper tokens: long-lived tokens that read /metrics and nothing else (`xcore metrics token new|list|revoke`).

A Prometheus server scrapes for months; an access token lasts minutes, and an account's password can do far more
than read metrics. So a scraper gets a token of its own: `xcore_metrics_` and 43 random characters (256 bits),
shown once when made. Only its SHA-256 is kept, in `<data>/metrics-tokens.json` (mode 0600), with its name and
when it was made. The access guard accepts one as `Authorization: Bearer <token>` on the path /metrics alone
(`xcore.web.guard`), as a principal that holds `metrics.read` and nothing else; on any other path it is not an
access token, and the answer is 401. A revoked token is gone from the file, and the guard rereads the file when
it changes, so a revocation holds at the next scrape in every worker.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from xcore.auth.errors import Conflict, InvalidInput, NotFound
from xcore.auth.rules import Principal
from xcore.paths import write_atomically

FILE_NAME = "metrics-tokens.json"
PREFIX = "xcore_metrics_"
PERMISSION = "metrics.read"
PATH = "/metrics"  # the one path a scraper token opens
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class ScraperToken:
    """ScraperToken is what is kept of one token: its name, when it was made, and its SHA-256 (hex)."""

    name: str
    created: str  # ISO 8601, UTC
    sha256: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ScraperTokens:
    """ScraperTokens is the file of scraper tokens at `path`: made, listed and revoked by the CLI, checked by the
    access guard (`principal`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None  # the file's (mtime_ns, size) when last read
        self._principals: dict[str, Principal] = {}  # by SHA-256

    def listed(self) -> list[ScraperToken]:
        """listed returns the tokens kept, oldest first. Raises InvalidInput when the file cannot be read."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{self.path} cannot be read ({exc}); fix or delete it") from None
        try:
            return [ScraperToken(str(t["name"]), str(t["created"]), str(t["sha256"])) for t in raw["tokens"]]
        except (KeyError, TypeError):
            raise InvalidInput(f"{self.path} is not a list of scraper tokens; fix or delete it") from None

    def create(self, name: str) -> str:
        """create makes the token `name` and returns it: the only time it is seen. Raises InvalidInput for a name
        that is malformed, Conflict for one that is taken."""
        if not NAME.match(name):
            raise InvalidInput(
                f"{name!r} is not a token name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        kept = self.listed()
        if any(t.name == name for t in kept):
            raise Conflict(f"a scraper token named {name!r} exists already; revoke it first, or choose another name")
        token = PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).replace(microsecond=0).isoformat()
        self._write([*kept, ScraperToken(name, created, digest(token))])
        return token

    def revoke(self, name: str) -> ScraperToken:
        """revoke removes the token `name` and returns it; raises NotFound when there is none."""
        kept = self.listed()
        found = next((t for t in kept if t.name == name), None)
        if found is None:
            names = ", ".join(t.name for t in kept) or "none"
            raise NotFound(f"no scraper token is named {name!r} (there are: {names})")
        self._write([t for t in kept if t is not found])
        return found

    def _write(self, tokens: list[ScraperToken]) -> None:
        text = json.dumps({"tokens": [asdict(t) for t in tokens]}, indent=2) + "\n"
        write_atomically(self.path, text.encode("utf-8"))

    def principal(self, token: str) -> Principal | None:
        """principal is who the scraper token `token` acts as: a principal holding `metrics.read` only, or None
        for a token that is not one (revoked, made up, or the file unreadable). A stat of the file per call; it is
        read again only when it changed."""
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        if seen != self._seen:
            self._seen = seen
            try:
                kept = self.listed() if seen is not None else []
            except InvalidInput:
                kept = []
            self._principals = {t.sha256: scraper_principal(t.name) for t in kept}
        return self._principals.get(digest(token))


def scraper_principal(name: str) -> Principal:
    """scraper_principal is the principal of the scraper token `name`: no account, no role, `metrics.read`."""
    return Principal(
        id=0,
        username=f"metrics-token:{name}",
        roles=frozenset(),
        permissions=frozenset({PERMISSION}),
        token_version=0,
        totp_enabled=False,
        totp_required=False,
    )
