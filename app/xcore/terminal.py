"""Text for people's terminals: what a client or a plugin typed is shown, never obeyed.

A value that reaches a console line, `xcore logs` or a CLI table may come from anyone: a username, a URL path, a
plugin's file name. Printed as it is, a newline in it starts a line that looks like xcore's own (a forged
`login.succeeded`), an escape sequence clears the screen or retitles the window, and a bidi override shows the
text in another order than it is stored. `printable` shows such characters as escapes instead, the way Python's
`repr` writes them, so that every line a person reads is one record and reads as stored.

Machine-readable outputs (the JSON log file, `--json`, the API) keep the exact value: JSON escapes it already.
"""

from __future__ import annotations

import unicodedata

# Unicode categories that are shown as escapes: control characters (C0, DEL, C1), format characters (bidi
# overrides and isolates, zero-width characters, the BOM, tag characters), lone surrogates (from undecodable
# bytes), and the line and paragraph separators. Other "non-printable" ones are safe to show as they are:
# spaces other than ' ' (Zs), private-use (Co) and unassigned (Cn) code points, which newer emoji may be.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, keep_newlines: bool = False) -> str:
    """printable returns `text` with every control, format and separator character written as an escape
    (`\\n`, `\\x1b`, `\\u202e`); other characters, backslashes included, are left as they are.

    With `keep_newlines`, "\\n" stays a line break (for text made of lines on purpose, such as a traceback or
    indented JSON); every other such character is still escaped. The common case (nothing to escape) costs one
    `str.isprintable` call.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (keep_newlines and ch == "\n") or unicodedata.category(ch) not in ESCAPED_CATEGORIES:
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
