"""Sealed backups: a stream encrypted and authenticated in chunks, with a passphrase or a generated key.

An encrypted backup archive (`xcore.db.archive`) is this container around the archive's bytes:

    MAGIC (8 bytes) | version (1 byte) | header length (4 bytes, big-endian) | header (JSON) | header MAC (32 bytes)
    | chunk 0 | chunk 1 | ... | final chunk

The header is not secret: the cipher, the chunk size, a random 32-byte salt, the archive's id, and how the secret
was made into a key (`scrypt` and its cost for a passphrase; the key's id for a generated key). From the secret and
the salt come two keys (HKDF-SHA256): one for the header's HMAC-SHA256, which is checked first and tells a wrong
secret apart from a damaged archive, and one for the chunks. Each chunk is at most `chunk` bytes of the archive,
encrypted with AES-256-GCM (16-byte tag) under the nonce `counter (11 bytes, big-endian) | final flag (1 byte)`,
the STREAM construction: a chunk moved, dropped, repeated or taken from another archive fails its tag, and so does
an archive cut after any chunk (the last one left was not sealed as the final one) or extended past its final one.
The salt makes the chunk key of every archive its own, so the counter nonces never repeat under one key.

A generated key is 32 random bytes, written for people as `XCK1-` and the base32 of the key and a 2-byte check
(`key_text`), in groups of five: a mistyped key is refused as mistyped, not as wrong. Its `key_id` (16 hex digits
of an HMAC of the key) is in the header of every archive it seals, so a refusal can say which key it needs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import unicodedata
from dataclasses import dataclass
from typing import IO, Any, Literal

MAGIC = b"XCBACKUP"
VERSION = 1
CIPHER = "AES-256-GCM"
CHUNK = 1 << 18  # bytes of the archive per chunk
TAG = 16
MAC_SIZE = 32
SALT_SIZE = 32
MAX_HEADER = 1 << 16
MAX_CHUNK = 1 << 24
# scrypt's cost: 128 MiB and about half a second per derivation. A header may ask for more (a newer xcore), up to
# these bounds; past them it is refused rather than allowed to take the machine's memory.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
MAX_SCRYPT_MEMORY = 1 << 30
MIN_PASSPHRASE = 12  # characters
KEY_PREFIX = "XCK1-"
KEY_SIZE = 32
_PREFIX = struct.Struct(">8sBI")


class SealError(ValueError):
    """SealError is a sealed stream this module will not open: its message is one line, for the user."""


class WrongSecret(SealError):
    """WrongSecret is a passphrase or key that does not open the archive (or a header damaged in just that way)."""


class SealDamaged(SealError):
    """SealDamaged is an archive whose chunks fail their authentication: damaged, truncated, extended or edited."""


@dataclass(frozen=True)
class Secret:
    """Secret is what seals and opens an archive: a passphrase (text) or a generated key (32 bytes)."""

    kind: Literal["passphrase", "key"]
    value: bytes

    @staticmethod
    def passphrase(text: str) -> Secret:
        """passphrase is the Secret of `text`, refused (SealError) when shorter than MIN_PASSPHRASE characters."""
        normal = unicodedata.normalize("NFC", text)
        if len(normal) < MIN_PASSPHRASE:
            raise SealError(f"the passphrase has {len(normal)} characters; it needs at least {MIN_PASSPHRASE}")
        return Secret("passphrase", normal.encode("utf-8"))

    @staticmethod
    def key(text: str) -> Secret:
        """key is the Secret of a key written as `key_text` writes it (spaces, dashes and case do not matter);
        text holding one, such as an emergency kit, works too. Raises SealError for anything else."""
        return Secret("key", parse_key(text))

    @staticmethod
    def new_key() -> Secret:
        """new_key is a freshly generated key."""
        return Secret("key", secrets.token_bytes(KEY_SIZE))

    @property
    def key_id(self) -> str | None:
        """key_id names a generated key (None for a passphrase) without telling anything about it."""
        if self.kind != "key":
            return None
        return hmac.new(self.value, b"xcore backup key id", hashlib.sha256).hexdigest()[:16]


def key_text(key: bytes) -> str:
    """key_text writes a key for people: `XCK1-` then the base32 of the key and a 2-byte check, in groups of 5."""
    check = hashlib.sha256(key).digest()[:2]
    encoded = base64.b32encode(key + check).decode().rstrip("=")
    return KEY_PREFIX + "-".join(encoded[i : i + 5] for i in range(0, len(encoded), 5))


def parse_key(text: str) -> bytes:
    """parse_key reads a key written by key_text out of `text` (which may be a whole emergency kit: the key is the
    rest of the line that holds `XCK1-`); spaces, dashes and case do not matter."""
    line = next((line for line in text.splitlines() if KEY_PREFIX[:-1] in line.upper()), None)
    if line is None:
        raise SealError(f"no backup key found: a key starts with {KEY_PREFIX} (it is in the backup's emergency kit)")
    rest = line[line.upper().index(KEY_PREFIX[:-1]) + len(KEY_PREFIX) - 1 :]
    letters = "".join(rest.split()).replace("-", "").upper()
    wanted = len(base64.b32encode(bytes(KEY_SIZE + 2)).rstrip(b"="))
    if len(letters) != wanted:
        raise SealError(
            f"the backup key is mistyped: it has {len(letters)} letters and digits after XCK1, not {wanted}"
        )
    try:
        raw = base64.b32decode(letters + "=" * (-len(letters) % 8))
    except ValueError:
        raise SealError("the backup key is mistyped: it holds a character other than A-Z and 2-7") from None
    key, check = raw[:KEY_SIZE], raw[KEY_SIZE:]
    if hashlib.sha256(key).digest()[:2] != check or base64.b32encode(raw).decode().rstrip("=") != letters:
        raise SealError("the backup key is mistyped: its check does not match; copy it again from the emergency kit")
    return key


def is_sealed(head: bytes) -> bool:
    """is_sealed tells, from a file's first bytes, whether it is a sealed stream."""
    return head.startswith(MAGIC)


def _keys(secret: Secret, header: dict[str, Any], salt: bytes) -> tuple[bytes, bytes]:
    """Derives the header's MAC key and the chunks' key from the secret and the salt."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if secret.kind == "passphrase":
        cost = header["secret"]
        ikm = Scrypt(salt=salt, length=32, n=cost["n"], r=cost["r"], p=cost["p"]).derive(secret.value)
    else:
        ikm = secret.value
    keys = []
    for purpose in (b"xcore backup v1 header", b"xcore backup v1 chunks"):
        keys.append(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=purpose).derive(ikm))
    return keys[0], keys[1]


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class SealedWriter:
    """SealedWriter encrypts what is written to it into `out`, chunk by chunk; `close` seals the final chunk
    (it does not close `out`). It holds one chunk in memory."""

    def __init__(self, out: IO[bytes], secret: Secret, archive_id: str, chunk: int = CHUNK) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        salt = os.urandom(SALT_SIZE)
        described: dict[str, Any] = (
            {"type": "passphrase", "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
            if secret.kind == "passphrase"
            else {"type": "key", "key_id": secret.key_id}
        )
        header = {
            "cipher": CIPHER,
            "chunk": chunk,
            "salt": base64.b64encode(salt).decode(),
            "secret": described,
            "id": archive_id,
        }
        body = json.dumps(header, sort_keys=True).encode()
        mac_key, chunk_key = _keys(secret, header, salt)
        prefix = _PREFIX.pack(MAGIC, VERSION, len(body)) + body
        out.write(prefix + hmac.new(mac_key, prefix, hashlib.sha256).digest())
        self._out, self._aead, self._chunk = out, AESGCM(chunk_key), chunk
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """write takes `data`; full chunks go out once more follows them (the final chunk is sealed as such)."""
        self._buffer += data
        while len(self._buffer) > self._chunk:
            self._emit(bytes(self._buffer[: self._chunk]), final=False)
            del self._buffer[: self._chunk]
        return len(data)

    def flush(self) -> None:
        """flush does nothing: a chunk goes out when it is full and followed, or at close."""

    def close(self) -> None:
        """close seals what is left as the final chunk (an empty one for an empty stream)."""
        if not self._closed:
            self._emit(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True

    def _emit(self, plain: bytes, final: bool) -> None:
        self._out.write(self._aead.encrypt(_nonce(self._counter, final), plain, None))
        self._counter += 1


@dataclass(frozen=True)
class SealHeader:
    """SealHeader is what a sealed stream says of itself before any secret is tried."""

    kind: Literal["passphrase", "key"]
    key_id: str | None
    archive_id: str
    fields: dict[str, Any]
    prefix: bytes  # the header's bytes, which its MAC covers
    mac: bytes

    def needs(self) -> str:
        """needs says, for a refusal, what opens the archive."""
        if self.kind == "key":
            return f"the backup key {self.key_id} (in the emergency kit saved when the backup was made)"
        return "the passphrase it was made with"


def read_header(source: IO[bytes], name: str) -> SealHeader:
    """read_header reads and checks the shape of a sealed stream's header; raises SealError naming `name`."""
    fixed = _read_exact(source, _PREFIX.size)
    if len(fixed) < _PREFIX.size:
        raise SealDamaged(f"{name}: is cut short within its header")
    magic, version, length = _PREFIX.unpack(fixed)
    if magic != MAGIC:
        raise SealError(f"{name}: is not an encrypted xcore backup")
    if version != VERSION:
        raise SealError(f"{name}: is encrypted in format {version}, which this xcore does not read ({VERSION})")
    if length > MAX_HEADER:
        raise SealDamaged(f"{name}: its header claims {length} bytes; it is damaged")
    body = _read_exact(source, length)
    mac = _read_exact(source, MAC_SIZE)
    if len(body) < length or len(mac) < MAC_SIZE:
        raise SealDamaged(f"{name}: is cut short within its header")
    try:
        fields = json.loads(body)
        salt = base64.b64decode(fields["salt"], validate=True)
        described = fields["secret"]
        kind = described["type"]
        chunk = fields["chunk"]
        archive_id = str(fields["id"])
        if fields["cipher"] != CIPHER or kind not in ("passphrase", "key") or len(salt) != SALT_SIZE:
            raise ValueError("unsupported")
        if not isinstance(chunk, int) or not 0 < chunk <= MAX_CHUNK:
            raise ValueError("chunk size")
        if kind == "passphrase":
            n, r, p = described["n"], described["r"], described["p"]
            if not all(isinstance(v, int) and v > 0 for v in (n, r, p)) or n & (n - 1) or p > 16:
                raise ValueError("scrypt cost")
            if 128 * n * r > MAX_SCRYPT_MEMORY:
                raise ValueError("scrypt cost")
    except (ValueError, KeyError, TypeError):
        raise SealDamaged(f"{name}: its encryption header is damaged or from an unknown format") from None
    key_id = described.get("key_id") if kind == "key" else None
    return SealHeader(kind, key_id, archive_id, fields, fixed + body, mac)


class SealedReader:
    """SealedReader reads the plain bytes of a sealed stream whose header `read_header` read, checking each
    chunk's tag; raises WrongSecret at once for a secret that does not open it, SealDamaged for a chunk that fails.
    """

    def __init__(self, source: IO[bytes], header: SealHeader, secret: Secret, name: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if secret.kind != header.kind:
            raise WrongSecret(f"{name}: is encrypted with {header.needs()}, not a {secret.kind}")
        if header.kind == "key" and header.key_id != secret.key_id:
            raise WrongSecret(f"{name}: this key is not the one it was encrypted with; it needs {header.needs()}")
        salt = base64.b64decode(header.fields["salt"])
        mac_key, chunk_key = _keys(secret, header.fields, salt)
        if not hmac.compare_digest(hmac.new(mac_key, header.prefix, hashlib.sha256).digest(), header.mac):
            what = "passphrase is wrong" if header.kind == "passphrase" else "key does not open it"
            raise WrongSecret(f"{name}: the {what} (or its header is damaged); it needs {header.needs()}")
        self._source, self._name = source, name
        self._aead = AESGCM(chunk_key)
        self._size = header.fields["chunk"] + TAG
        self._pending = _read_exact(source, self._size)
        self._counter = 0
        self._plain = b""
        self._at = 0  # how much of _plain was read already
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """read returns up to `size` plain bytes (all that is left for -1); b"" once the final chunk is read."""
        if size < 0:
            parts = [self._plain[self._at :]]
            while not self._done:
                self._next()
                parts.append(self._plain)
            self._plain, self._at = b"", 0
            return b"".join(parts)
        while self._at >= len(self._plain) and not self._done:
            self._next()
        out = self._plain[self._at : self._at + size]
        self._at += len(out)
        return out

    def _next(self) -> None:
        from cryptography.exceptions import InvalidTag

        sealed = self._pending
        following = _read_exact(self._source, self._size) if len(sealed) == self._size else b""
        final = not following
        if len(sealed) < TAG:
            raise SealDamaged(f"{self._name}: is cut short (it ends within an encrypted chunk)")
        try:
            plain = self._aead.decrypt(_nonce(self._counter, final), sealed, None)
        except InvalidTag:
            if final:
                raise SealDamaged(
                    f"{self._name}: is damaged or cut short (encrypted chunk {self._counter} is not its end)"
                ) from None
            raise SealDamaged(f"{self._name}: is damaged (encrypted chunk {self._counter} fails its check)") from None
        self._plain, self._at = plain, 0
        self._pending = following
        self._counter += 1
        self._done = final


def _read_exact(source: IO[bytes], size: int) -> bytes:
    """Reads `size` bytes, fewer only at the end of `source` (a pipe may return less per read)."""
    data = source.read(size)
    if len(data) in (0, size):
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = source.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
