"""The repository stands on its own: its design documents are docs/architecture.md (the code) and
plugins/README.md (the plugin contract), with README.md for users, and nothing in it refers to a file outside
it (the first design and the team's notes stay outside)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Spelled in parts, so that this file holds no reference either and is checked like every other.
OUTSIDE = tuple(stem.upper() + ".md" for stem in ("design", "style")) + tuple(
    p.replace("|", "") for p in ("../sh|ared", "shared/s|eed")
)


def test_nothing_refers_to_a_file_outside_the_repository() -> None:
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    found = []
    for name in filter(None, tracked):
        path = ROOT / name
        if name.startswith("ui/vendor/") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary: a zip, an image, the gzipped password list
            continue
        found += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert not found, f"references to files outside the repository: {found}"
