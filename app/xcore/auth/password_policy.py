"""The password policy: what every password set in xcore must pass, and its description for the UI.

Checks, in order: length, closeness to the account (username, its reverse, the email address), variety, the list
of common passwords (also with a few digits or symbols added, or letters written as look-alike digits), and
predictable patterns (keyboard walks, sequences, repeats). `secure.password` turns the last two off.

The common passwords are the 20,000 of Royce Williams's list as Django ships them (`common-passwords.txt.gz`
beside this module, its origin and licence in `common-passwords.LICENSE`), read once, offline.
"""

from __future__ import annotations

import gzip
import re
from functools import cache
from pathlib import Path
from typing import Any

from xcore.auth.errors import InvalidInput
from xcore.config.schema import PasswordConfig

MAX_LENGTH = 1024
COMMON_FILE = Path(__file__).with_name("common-passwords.txt.gz")
# A password is refused as patterns when fewer than this many of its characters, or at most a third of them, are
# outside keyboard walks, sequences and repeats.
MIN_FREE_CHARACTERS = 4
# A common password with at most this many digits or symbols around it, or with more that are mostly patterns
# (dragon!!1234), is still a common password.
MAX_DECORATION = 5
SHORTEST_PATTERN = 3
# The longest block looked for repeated (abcabc): longer repeats are rare, and the search costs size x length.
MAX_BLOCK = 16

# The rows of a US QWERTY keyboard, each with its horizontal offset in key widths, for "which keys touch".
_ROWS = (("`1234567890-=", 0.0), ("qwertyuiop[]\\", 1.5), ("asdfghjkl;'", 1.75), ("zxcvbnm,./", 2.25))
_SHIFTED = str.maketrans('~!@#$%^&*()_+{}|:"<>?', "`1234567890-=[]\\;',./")
_LEET = (str.maketrans("@4310$57!+|", "aaeiosstitl"), str.maketrans("@4310$57!+|", "aaelosstitl"))
_DECORATION = re.compile(r"^([\W\d_]*)(.*?)([\W\d_]*)$", re.DOTALL)


def check_password(
    password: str, policy: PasswordConfig, *, username: str, email: str | None, field: str = "password"
) -> None:
    """check_password raises InvalidInput, naming `field`, with the first rule `password` breaks; returns None when
    it passes the policy. `username` and `email` are those of the account the password is for."""
    problem = password_problem(password, policy, username=username, email=email)
    if problem:
        raise InvalidInput(problem, field=field)


def password_problem(password: str, policy: PasswordConfig, *, username: str, email: str | None) -> str | None:
    """password_problem says in words what is wrong with `password` under `policy`, or None when nothing is."""
    if len(password) < policy.min_length:
        return f"the password must have at least {policy.min_length} characters"
    if len(password) > MAX_LENGTH:
        return f"the password must have at most {MAX_LENGTH} characters"
    lowered = password.casefold()
    local = email.split("@", 1)[0] if email else None
    for what, value in (
        ("username", username),
        ("username reversed", username[::-1]),
        ("email address", email),
        ("email name", local),
    ):
        if value and len(value) >= 3 and (value.casefold() in lowered or lowered in value.casefold()):
            return f"the password must not contain the {what} or be part of it"
    if len(set(password)) < 4:
        return "the password needs more different characters"
    if policy.refuse_common:
        problem = _common_problem(lowered)
        if problem:
            return problem
    if policy.refuse_patterns:
        parts = _pattern_parts(lowered)
        if parts is not None:
            named = " plus ".join(f"{kind} ({_excerpt(text)!r})" for kind, text in parts[:3])
            more = f" and {len(parts) - 3} more patterns" if len(parts) > 3 else ""
            return (
                f"the password is {named}{more}: guessers try such patterns first; add words or characters that"
                " do not follow each other"
            )
    return None


def describe(policy: PasswordConfig) -> dict[str, Any]:
    """describe is the policy as the UI shows it: the limits, the switches, and one sentence per rule."""
    rules = [
        f"At least {policy.min_length} characters (at most {MAX_LENGTH}).",
        "Not the username, its reverse or the email address, nor part of them.",
        "At least 4 different characters.",
    ]
    if policy.refuse_common:
        rules.append("Not one of 20,000 common passwords, even with a few digits or symbols added.")
    if policy.refuse_patterns:
        rules.append("Not mostly keyboard patterns (qwerty), sequences (12345, abcd) or repeats (aaaa, abcabc).")
    return {
        "min_length": policy.min_length,
        "max_length": MAX_LENGTH,
        "refuse_common": policy.refuse_common,
        "refuse_patterns": policy.refuse_patterns,
        "rules": rules,
    }


@cache
def common_passwords() -> frozenset[str]:
    """common_passwords is the shipped list, lowercased, read once."""
    with gzip.open(COMMON_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())


def _common_problem(lowered: str) -> str | None:
    common = common_passwords()
    if any(c in common for c in _spellings(lowered)):
        return "the password is in the list of common passwords; choose one nobody else would"
    match = _DECORATION.match(lowered)
    before, core, after = match.groups() if match else ("", lowered, "")
    if (before or after) and len(core) >= 4:
        around = len(before) + len(after)
        predictable = _free_characters(before) + _free_characters(after) < MIN_FREE_CHARACTERS
        if (around <= MAX_DECORATION or predictable) and any(c in common for c in _spellings(core)):
            return (
                f"the password is a common password ({core!r}) with a few digits or symbols added, as good as in the"
                " list of common passwords; choose one nobody else would"
            )
    return None


def _excerpt(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "..."


def _spellings(text: str) -> set[str]:
    """_spellings are `text` and `text` with look-alike digits and symbols read as letters (p@ssw0rd)."""
    return {text, *(text.translate(table) for table in _LEET)}


# Patterns: a password is cut into runs of 3 or more characters that follow a pattern, and the rest ("free"
# characters). When too few are free (MIN_FREE_CHARACTERS), the password is the patterns.


def _pattern_parts(lowered: str) -> list[tuple[str, str]] | None:
    """_pattern_parts lists the (kind, text) runs covering `lowered` when it is made of patterns, else None."""
    best = _cover(lowered)
    free, parts = best
    if not parts or (free >= MIN_FREE_CHARACTERS and free * 3 > len(lowered)):
        return None
    return parts


def _free_characters(text: str) -> int:
    return _cover(text)[0] if text else 0


def _cover(text: str) -> tuple[int, list[tuple[str, str]]]:
    """_cover finds the patterns that leave the fewest characters free: (free count, the patterns in order)."""
    n = len(text)
    runs = _runs(text)
    # free[j] is the fewest free characters in text[:j]; back[j] the pattern (start, kind) ending at j, if any.
    free = [0] * (n + 1)
    back: list[tuple[int, str] | None] = [None] * (n + 1)
    ending: list[list[tuple[int, str, int]]] = [[] for _ in range(n + 1)]
    for start, end, kind, shortest in runs:
        for j in range(start + shortest, end + 1):
            ending[j].append((start, kind, shortest))
    for j in range(1, n + 1):
        free[j] = free[j - 1] + 1
        for start, kind, shortest in ending[j]:
            i = min(range(start, j - shortest + 1), key=free.__getitem__)
            if free[i] < free[j]:
                free[j], back[j] = free[i], (i, kind)
    parts: list[tuple[str, str]] = []
    j = n
    while j > 0:
        step = back[j]
        if step is None:
            j -= 1
        else:
            parts.append((step[1], text[step[0] : j]))
            j = step[0]
    return free[n], parts[::-1]


def _runs(text: str) -> list[tuple[int, int, str, int]]:
    """_runs lists the maximal runs of `text` that follow a pattern, as (start, end, kind, shortest part that
    counts): any part of a run at least `shortest` long is that pattern too."""
    found: list[tuple[int, int, str, int]] = []
    steps = (
        ("a repeated character", lambda a, b: a == b),
        ("a sequence", lambda a, b: abs(ord(a) - ord(b)) == 1 and (a.isalnum() and b.isalnum())),
        ("a keyboard pattern", lambda a, b: b in _neighbours(a)),
    )
    n = len(text)
    for kind, follows in steps:
        start = 0
        for k in range(1, n + 1):
            turned = False
            if k < n and follows(text[k - 1], text[k]):
                if _same_direction(kind, text, start, k):
                    continue
                turned = True  # 12321: the run turns; the turning character begins the next one
            if k - start >= SHORTEST_PATTERN:
                found.append((start, k, kind, SHORTEST_PATTERN))
            start = k - 1 if turned else k
    for size in range(2, min(n // 2, MAX_BLOCK) + 1):  # a block said again: abcabc, xk9#xk9#
        for i in range(size, n - size + 1):
            if text[i : i + size] == text[i - size : i]:
                found.append((i, i + size, f"a repeat of {text[i - size : i]!r}", size))
    return found


def _same_direction(kind: str, text: str, start: int, k: int) -> bool:
    """_same_direction keeps a sequence going one way: 1234 and 4321 are sequences, 1212 is not."""
    if kind != "a sequence" or k - start < 2:
        return True
    return ord(text[k]) - ord(text[k - 1]) == ord(text[k - 1]) - ord(text[k - 2])


@cache
def _neighbours(key: str) -> frozenset[str]:
    """_neighbours are the keys touching `key` on a QWERTY keyboard (shifted symbols count as their key)."""
    base = key.translate(_SHIFTED)
    where = {c: (r, i + offset) for r, (row, offset) in enumerate(_ROWS) for i, c in enumerate(row)}
    if base not in where:
        return frozenset()
    row, x = where[base]
    near = {
        c
        for c, (r, cx) in where.items()
        if c != base and ((r == row and abs(cx - x) == 1) or (abs(r - row) == 1 and abs(cx - x) < 1))
    }
    shifted_back = {s for s, b in zip('~!@#$%^&*()_+{}|:"<>?', "`1234567890-=[]\\;',./", strict=True) if b in near}
    return frozenset(near | shifted_back)
