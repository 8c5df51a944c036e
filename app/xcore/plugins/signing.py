"""Signed bundles: an Ed25519 signature over a bundle's content, and the operator's trust store.

An author makes a key pair once (`xcore keys new NAME`: `NAME.key`, the private key, and `NAME.pub`, one line
`xcore-ed25519 <base64 key> <name>`), and `xcore plugin pack --sign NAME.key` writes `xcore-signature.json` into
the zip: the signer's name and public key, and a signature over the bundle's content manifest, which is the
plugin's id and version and the sha256 of every other entry, by name (`content_manifest`). Changing, adding or
removing any entry after signing breaks the signature; `inspect_bundle` refuses such a bundle always, whatever
the policy.

A valid signature says who signed; whether that signer is trusted is the operator's call: the trust store
(`<data>/trusted-keys.json`, `xcore trust add|remove|list`, the admin API) lists the public keys they trust,
each with a name. `manager.plugins.policy` then decides what runs (`policy_refusal`). No network, no
certificate authority, no secret in git: the private key never leaves the author's machine.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xcore.errors import RequestError
from xcore.paths import write_atomically

SIGNATURE_FORMAT = 1
KEY_PREFIX = "xcore-ed25519"
SIGNER_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"
POLICIES = ("unsigned", "sandbox-unsigned", "signed-only")


class SignatureError(RequestError):
    """SignatureError is a signature or key that cannot be used, saying why in one line (a 422 to a request)."""

    status = 422


@dataclass(frozen=True)
class Signer:
    """Signer is who signed a bundle, as its signature says: the name they gave and their public key."""

    name: str
    public_key: bytes  # raw, 32 bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class TrustedKey:
    """TrustedKey is one public key the operator trusts, with the name they know it by."""

    name: str
    public_key: bytes
    added: float

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "key_id": self.key_id, "public_key": public_line(self.public_key, self.name)}


def key_id(public_key: bytes) -> str:
    """key_id is a short fingerprint of a public key: the first 16 hex digits of its sha256, in groups of 4."""
    digest = hashlib.sha256(public_key).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def public_line(public_key: bytes, name: str) -> str:
    """public_line is the text of a `.pub` file: `xcore-ed25519 <base64 key> <name>`."""
    return f"{KEY_PREFIX} {base64.b64encode(public_key).decode()} {name}"


def new_key(name: str) -> tuple[bytes, str]:
    """new_key makes a key pair for signer `name`: (the private key as PEM, the public key's line)."""
    check_name(name)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem, public_line(raw, name)


def check_name(name: str) -> None:
    if not re.match(SIGNER_NAME, name):
        raise SignatureError(
            f"{name!r} is not a signer's name: 1 to 64 letters, digits, spaces and . _ @ -, starting with a letter "
            "or digit"
        )


def read_private_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    """read_private_key reads a `.key` file (and the signer's name from the `.pub` beside it, else the file's
    stem); raises SignatureError saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the key {path} ({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not a private key made by `xcore keys new` ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key; make one with `xcore keys new`")
    name = path.stem
    companion = path.with_suffix(".pub")
    if companion.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError, SignatureError):
            name = parse_public_key(companion.read_text(encoding="utf-8"))[0] or name
    check_name(name)
    return key, name


def parse_public_key(text: str) -> tuple[str | None, bytes]:
    """parse_public_key reads `xcore-ed25519 <base64 key> [name]` (a `.pub` file's line): (name or None, key)."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[0] != KEY_PREFIX:
        raise SignatureError(f"a public key is one line `{KEY_PREFIX} <base64 key> <name>`, as `xcore keys new` writes")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the public key is not valid base64") from None
    if len(raw) != 32:
        raise SignatureError(f"an Ed25519 public key is 32 bytes, this one {len(raw)}")
    return (parts[2].strip() if len(parts) > 2 else None), raw


def content_manifest(plugin_id: str, version: str, entries: Iterable[tuple[str, bytes | str]]) -> bytes:
    """content_manifest is what a signature covers: the plugin's id and version and, sorted by name, the sha256
    of each entry (its bytes, or the hex digest given), as canonical JSON."""
    hashed = sorted(
        (name, data if isinstance(data, str) else hashlib.sha256(data).hexdigest()) for name, data in entries
    )
    body = {"format": SIGNATURE_FORMAT, "id": plugin_id, "version": version, "entries": hashed}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, name: str, manifest: bytes) -> bytes:
    """sign is the text of `xcore-signature.json` for the content manifest `manifest`."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    document = {
        "format": SIGNATURE_FORMAT,
        "signer": name,
        "public_key": base64.b64encode(raw).decode(),
        "signature": base64.b64encode(key.sign(manifest)).decode(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def verify(signature: bytes, manifest: bytes) -> Signer:
    """verify checks `xcore-signature.json` against the content manifest of the zip as it is; returns its signer,
    or raises SignatureError saying why the signature does not hold."""
    try:
        document = json.loads(signature)
        name, encoded, signed = document["signer"], document["public_key"], document["signature"]
        if document.get("format") != SIGNATURE_FORMAT or not all(isinstance(v, str) for v in (name, encoded, signed)):
            raise ValueError("unknown format")
        raw = base64.b64decode(encoded, validate=True)
        blob = base64.b64decode(signed, validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"the signature file cannot be read ({exc})") from None
    try:
        public.verify(blob, manifest)
    except InvalidSignature:
        raise SignatureError(
            "the signature does not match the bundle's content: it changed after it was signed"
        ) from None
    return Signer(name, raw)


class TrustStore:
    """TrustStore is the public keys the operator trusts, in one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int], list[TrustedKey]] | None = None

    def listed(self) -> list[TrustedKey]:
        """listed are the trusted keys, by name; re-read when the file changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            listed = json.loads(self.path.read_text(encoding="utf-8"))["keys"]
            found = [
                TrustedKey(str(k["name"]), parse_public_key(str(k["public_key"]))[1], float(k.get("added", 0)))
                for k in listed
            ]
        except (OSError, ValueError, KeyError, TypeError, SignatureError) as exc:
            raise SignatureError(f"the trust store {self.path} cannot be read ({exc}); fix or delete it") from None
        found.sort(key=lambda k: k.name.lower())
        self._cache = (stamp, found)
        return found

    def trusted(self, signer: Signer | None) -> TrustedKey | None:
        """trusted is the trusted key a signer signed with, or None."""
        if signer is None:
            return None
        return next((k for k in self.listed() if k.public_key == signer.public_key), None)

    def add(self, text: str, name: str | None = None) -> TrustedKey:
        """add trusts the public key of `text` (a `.pub` line) under `name` (else the line's); raises
        SignatureError for a bad key or a name or key trusted already."""
        given, raw = parse_public_key(text)
        chosen = name or given
        if not chosen:
            raise SignatureError("the key has no name: give one")
        check_name(chosen)
        keys = self.listed()
        for key in keys:
            if key.public_key == raw:
                raise SignatureError(f"this key is trusted already, as {key.name!r}")
            if key.name.lower() == chosen.lower():
                raise SignatureError(f"a key named {chosen!r} is trusted already; give another name")
        added = TrustedKey(chosen, raw, time.time())
        self._write([*keys, added])
        return added

    def remove(self, which: str) -> TrustedKey:
        """remove stops trusting the key named `which` (or with that key id); raises SignatureError if none."""
        keys = self.listed()
        found = next((k for k in keys if which in (k.name, k.key_id)), None)
        if found is None:
            raise SignatureError(f"no trusted key is named {which!r}")
        self._write([k for k in keys if k is not found])
        return found

    def _write(self, keys: list[TrustedKey]) -> None:
        data = {"keys": [{**k.as_json(), "added": k.added} for k in keys]}
        write_atomically(self.path, json.dumps(data, indent=2).encode())
        self._cache = None


def policy_says(policy: str, signer: Signer | None, trusted: TrustedKey | None) -> tuple[str | None, str | None]:
    """policy_says is what `manager.plugins.policy` makes of a bundle: (why it is refused, why it must run
    sandboxed), each None when it does not. A bundle signed by a key the operator does not trust counts as
    unsigned; a signature that does not hold never gets this far (`inspect_bundle` refuses the bundle)."""
    if trusted is not None or policy == "unsigned":
        return None, None
    what = (
        "unsigned" if signer is None else f"signed by {signer.name!r} ({signer.key_id}), a key this host does not trust"
    )
    if policy == "sandbox-unsigned":
        return None, f"the bundle is {what}, and manager.plugins.policy sandbox-unsigned runs such a bundle sandboxed"
    return (
        f"policy: the bundle is {what}; manager.plugins.policy signed-only runs only bundles a trusted key signed",
        None,
    )
