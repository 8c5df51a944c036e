"""The desktop window's sign-in: a one-time token that logs the machine's owner in without a password.

`xcore desktop` issues a token and opens its window on `/admin/#desktop=<token>`; the page posts it to
`POST /api/auth/desktop`. A token is a file in `<data>/desktop-tokens/` named by the token's SHA-256 and holding
its expiry (mode 0600, in the 0700 data directory), so any process of the same OS user can issue one (a second
`xcore desktop` can too), and the server never stores the token itself. It works once (redeeming deletes the
file, and of two racing redemptions only one deletes it), for `TOKEN_TTL` seconds, and only from a loopback
address.

Whom it signs in: the desktop owner is the oldest active superadmin (the lowest user id), which is the account
that completed first-run setup unless that one was deactivated or demoted since. Issuing a token needs write
access to the data directory, which already lets that OS user create a superadmin with `xcore user create`, so
the token grants nothing the OS user does not have; that is also why it skips the second factor.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcore.auth import audit
from xcore.auth.builtin import SUPERADMIN
from xcore.auth.errors import Conflict, Forbidden, NotAuthenticated
from xcore.auth.login import Tokens, start_session
from xcore.auth.service import AuthService, Client
from xcore.db.models import Role, User

TOKENS_DIR = "desktop-tokens"
TOKEN_TTL = 120.0  # seconds: the window posts its token within a few seconds of starting
WRONG_TOKEN = "the desktop token is wrong, expired or already used; close the window and run `xcore desktop` again"


class DesktopTokens:
    """DesktopTokens issues and redeems the one-time desktop tokens of one data directory."""

    def __init__(self, data_root: Path) -> None:
        self.directory = data_root / TOKENS_DIR

    def issue(self, ttl: float = TOKEN_TTL) -> str:
        """issue writes a new token's file (mode 0600, atomically) and returns the token; it also deletes the
        files of expired tokens."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._prune()
        token = secrets.token_urlsafe(32)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".new-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{time.time() + ttl:.3f}\n")
            if sys.platform != "win32":
                os.chmod(tmp, 0o600)
            os.replace(tmp, self._path(token))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return token

    def redeem(self, token: str) -> bool:
        """redeem uses the token up: true when it was issued, not used before and has not expired."""
        path = self._path(token)
        try:
            expires = float(path.read_text().strip() or 0)
            path.unlink()  # the one redemption that deletes the file wins
        except (OSError, ValueError):
            return False
        return time.time() < expires

    def _path(self, token: str) -> Path:
        return self.directory / hashlib.sha256(token.encode()).hexdigest()

    def _prune(self) -> None:
        now = time.time()
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError, ValueError):
                if path.name.startswith(".new-"):  # being written, or left by a crash
                    if now - path.stat().st_mtime > TOKEN_TTL:
                        path.unlink()
                elif float(path.read_text().strip() or 0) <= now:
                    path.unlink()


def is_loopback(ip: str | None) -> bool:
    """is_loopback is true for 127.0.0.0/8 and ::1 (also written as an IPv4-mapped IPv6 address)."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def desktop_owner(session: Session) -> User | None:
    """desktop_owner is the oldest active superadmin, or None."""
    return session.scalar(
        select(User)
        .join(User.roles)
        .where(Role.name == SUPERADMIN, User.is_active.is_(True))
        .order_by(User.id)
        .limit(1)
    )


def desktop_login(svc: AuthService, tokens: DesktopTokens, token: str, client: Client) -> Tokens:
    """desktop_login redeems a desktop token and opens a session for the desktop owner.

    Raises Forbidden for a client that is not on a loopback address, NotAuthenticated for a wrong, expired or
    used token, and Conflict while no active superadmin exists (first run: set up the owner first).
    """
    if not is_loopback(client.ip):
        raise Forbidden("the desktop sign-in works only from this machine (127.0.0.1 or ::1)")
    if not tokens.redeem(token):
        raise NotAuthenticated(WRONG_TOKEN, field="token")
    if svc.setup_required():
        raise Conflict("no account exists yet; create the owner through the setup page first")
    with svc.transaction() as session:
        owner = desktop_owner(session)
        if owner is None:
            raise Conflict(
                "no active superadmin exists to sign in; make one with `xcore user create NAME --superadmin`"
            )
        owner.last_login_at = datetime.now(UTC)
        session_tokens = start_session(svc, session, owner)
        audit.record(session, "login.desktop", actor=owner.username, ip=client.ip)
    return session_tokens
