"""The settings table of the README, generated from the schema (`xcore config docs` prints it)."""

from __future__ import annotations

import json

from xcore.config.schema import Setting, iter_settings

TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def env_name(setting: Setting) -> str:
    """env_name is the environment variable that sets `setting`: XCORE_<SECTION>__<KEY>."""
    return "XCORE_" + "__".join(part.upper() for part in setting.path)


def settings_table() -> str:
    """settings_table renders every setting as a Markdown table row: key, type, default, meaning."""
    rows = [
        "| key | type | default | meaning | environment variable |",
        "|---|---|---|---|---|",
    ]
    for s in iter_settings():
        default = json.dumps(s.default).replace("|", "\\|")
        meaning = s.help.replace("|", "\\|") + (" *Secret: masked by `xcore config show`.*" if s.secret else "")
        rows.append(f"| `{s.key}` | {s.type_name} | `{default}` | {meaning} | `{env_name(s)}` |")
    return "\n".join(rows)
