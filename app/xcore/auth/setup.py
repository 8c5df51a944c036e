"""First run: while no account exists, a one-time setup token (in `<data>/setup-token`, mode 0600) lets one
person create the first superadmin. There are no default credentials."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

SETUP_TOKEN_FILE = "setup-token"


class SetupToken:
    """SetupToken is the first-run token file. It is created by `xcore serve` and removed once used."""

    def __init__(self, data_root: Path) -> None:
        self.path = data_root / SETUP_TOKEN_FILE

    def create(self) -> str:
        """create writes a new random token (mode 0600, atomically) and returns it."""
        token = secrets.token_urlsafe(24)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".setup-token-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return token

    def matches(self, token: str) -> bool:
        """matches compares in constant time; false when there is no token file."""
        try:
            expected = self.path.read_text().strip()
        except FileNotFoundError:
            return False
        return bool(expected) and hmac.compare_digest(expected.encode(), token.strip().encode())

    def claim(self, token: str) -> Path | None:
        """claim takes the token for one setup attempt: returns the claimed file, or None for a wrong token or a
        token another attempt holds."""
        if not self.matches(token):
            return None
        claimed = self.path.with_name(f".{SETUP_TOKEN_FILE}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, claimed)
        except FileNotFoundError:
            return None
        return claimed

    def unclaim(self, claimed: Path) -> None:
        """unclaim puts a claimed token back after a failed attempt."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
