"""What the admin API, the CLI and /health show of the plugins: one `PluginView` per plugin id.

The views are made from one reconcile's facts: the scan of the folder, the enabled flags, the versions serving,
and why other versions did not load (`Notes`). They are plain data, replaced as a whole after each reconcile,
so a reader on another thread sees one reconcile's picture, never half of two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from xcore.plugins.health import PluginHealth
from xcore.plugins.loader import LoadedPlugin
from xcore.plugins.manifest import Manifest
from xcore.plugins.requirements import bundle_wheels, plan
from xcore.plugins.sources import Scan, Source
from xcore.sdk import TaskSpec

APP_PAGES = "/admin/apps"  # where the app shows a plugin's pages: <APP_PAGES>/<plugin id>/<page path>

# Why versions did not load in the last reconcile: plugin id -> [(fingerprint or "", version, reason)].
Notes = dict[str, list[tuple[str, str, str]]]


@dataclass
class PluginView:
    """PluginView is what the admin API shows for one plugin id."""

    id: str
    state: str  # active | disabled | failed | pending
    enabled: bool
    version: str | None  # the version serving, else the newest one seen
    error: str | None = None
    name: str | None = None
    description: str | None = None
    author: str | None = None
    prefix: str | None = None
    source: str | None = None  # "zip" or "dev"
    file: str | None = None
    sha256: str | None = None
    routes: list[str] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    dependencies: dict[str, str] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the merged settings; GET .../config has the parts
    serving: str | None = None  # the version serving now, None when none does
    failed_versions: list[str] = field(default_factory=list)  # each failed version (a broken zip: its file name)
    summary: str | None = None  # "serving 0.5.0, 0.6.0 failed"; None when nothing serves and nothing failed
    # A sandboxed version's worker: its state ("running", or "crashed (why), restarting in N s") and the isolation
    # layers it runs under; None for a version in the server's process.
    sandbox: dict[str, Any] | None = None
    # The permission that changing the plugin needs: plugins.manage_sandboxed when every version of it runs
    # sandboxed, else plugins.manage (see `xcore.auth.builtin.manage_permission`).
    manage_permission: str = "plugins.manage"
    # Its plugin.json's requirements that apply here, each with what meets it (`xcore.plugins.requirements`).
    requirements: list[dict[str, str | None]] = field(default_factory=list)
    # The pages it adds to the app (plugin.json's `pages`): path, title, permission, the app's address of the page
    # (href), and the URLs of its module and icon under the plugin's prefix.
    pages: list[dict[str, str | None]] = field(default_factory=list)
    # Who signed the bundle shown (the serving one, else the newest): signer, key_id, and whether this host
    # trusts the key (trusted_as: the name it is trusted under); None when unsigned.
    signature: dict[str, Any] | None = None
    # What the catalogues say about this version (level, message, catalogue): a warning about a known problem, say.
    notices: list[dict[str, str]] = field(default_factory=list)
    # A stamp of the version serving (its fingerprint), which changes with each swap; None when none serves.
    stamp: str | None = None
    # Its last health check (`xcore.plugins.health`): status ok | failing | unknown, a short detail, checked_at.
    # Unknown for a plugin not serving, not checked yet, or without a health(). Failing flags it; it still serves.
    health: PluginHealth = field(default_factory=PluginHealth)


def page_views(manifest: Manifest) -> list[dict[str, str | None]]:
    """page_views are the pages of `manifest` as PluginView.pages shows them."""
    prefix = manifest.prefix
    return [
        {
            "path": page.path,
            "title": page.title,
            "permission": page.permission,
            "href": f"{APP_PAGES}/{manifest.id}/{page.path}",
            "module": f"{prefix}/{page.module}",
            "icon": f"{prefix}/{page.icon}" if page.icon else None,
        }
        for page in manifest.pages
    ]


def plugin_views(
    scan: Scan,
    enabled: Mapping[str, bool],
    loaded: Mapping[str, LoadedPlugin],
    notes: Notes,
    routes: Callable[[LoadedPlugin], list[str]],
) -> dict[str, PluginView]:
    """plugin_views are the views of every plugin id seen: in the folder, serving, or disabled."""
    sources: dict[str, list[Source]] = {}
    for source in scan.sources:
        sources.setdefault(source.id, []).append(source)
    ids = set(sources) | {p.plugin_id for p in scan.problems} | set(loaded)
    ids |= {pid for pid, on in enabled.items() if not on}
    return {
        pid: _view(pid, sources.get(pid, []), scan, enabled.get(pid, True), loaded.get(pid), notes, routes)
        for pid in sorted(ids)
    }


def _view(
    pid: str,
    found: list[Source],
    scan: Scan,
    enabled: bool,
    serving: LoadedPlugin | None,
    all_notes: Notes,
    routes: Callable[[LoadedPlugin], list[str]],
) -> PluginView:
    sources = sorted(found, key=lambda s: (s.dev, s.version), reverse=True)
    problems = [p for p in scan.problems if p.plugin_id == pid]
    notes = [f"{version} failed: {reason}" if version else reason for _, version, reason in all_notes.get(pid, [])]
    failures = {fingerprint: reason for fingerprint, _, reason in all_notes.get(pid, []) if fingerprint}
    versions: list[dict[str, Any]] = []
    for source in sources:
        failed = failures.get(source.fingerprint)
        if serving is not None and source.fingerprint == serving.fingerprint:
            state = "active"
        elif failed:
            state = "failed"
        elif not enabled:
            state = "disabled"
        elif serving is not None and source.version < Version(serving.version):
            state = "superseded"
        else:
            state = "failed" if pid in all_notes else "pending"
        versions.append(
            {
                "version": source.manifest.version,
                "file": source.path.name,
                "sha256": source.fingerprint,
                "dev": source.dev,
                "state": state,
                "error": failed,
            }
        )
    versions += [
        {"version": None, "file": p.path.name, "sha256": None, "dev": False, "state": p.state, "error": p.error}
        for p in problems
    ]
    shown = serving.manifest if serving else (sources[0].manifest if sources else None)
    error: str | None
    if not enabled:
        state, error = "disabled", None
    elif serving is not None:
        state = "active"
        error = f"{'; '.join(notes)}; serving {serving.version}" if notes else None
        pending = [p for p in problems if p.state == "pending"]
        if pending and not notes:
            error = f"{pending[0].path.name} is pending: {pending[0].error}; serving {serving.version}"
    elif notes or any(p.state == "failed" for p in problems):
        state = "failed"
        error = "; ".join(notes + [p.error for p in problems if p.state == "failed"])
    else:
        state, error = ("pending", problems[0].error) if problems else ("failed", "no bundle")
    view = PluginView(id=pid, state=state, enabled=enabled, version=shown.version if shown else None, error=error)
    view.versions = versions
    view.serving = serving.version if serving is not None else None
    view.failed_versions = [v["version"] or v["file"] for v in versions if v["state"] == "failed"]
    view.summary = version_summary(view.serving, view.failed_versions)
    if shown is not None:
        view.name, view.description, view.author = shown.name, shown.description, shown.author
        view.prefix, view.permissions = shown.prefix, list(shown.permissions)
        view.dependencies = dict(shown.dependencies)
        view.requirements = _requirements(serving, sources[0] if sources else None)
        view.pages = page_views(shown)
    origin: Source | LoadedPlugin | None = serving or (sources[0] if sources else None)
    if origin is not None:
        view.source = "dev" if origin.dev else "zip"
        path = origin.source if isinstance(origin, LoadedPlugin) else origin.path
        bundle = None if isinstance(origin, LoadedPlugin) else origin.bundle
        signer = origin.signer if isinstance(origin, LoadedPlugin) else (bundle.signer if bundle else None)
        if signer is not None:
            view.signature = {"signer": signer.name, "key_id": signer.key_id, "trusted": False, "trusted_as": None}
        view.file, view.sha256 = path.name, (None if origin.dev else origin.fingerprint)
    if serving is not None:
        view.stamp = serving.fingerprint
        view.routes = routes(serving)
        if serving.sandbox is not None:
            refresh_sandbox(view, serving)
        view.tasks = [task_view(name, spec) for name, spec in serving.task_specs().items()]
        view.config = dict(serving.context.config)
    return view


def _requirements(serving: LoadedPlugin | None, newest: Source | None) -> list[dict[str, str | None]]:
    """_requirements are what meets each requirement of the serving version (its wheels' own included), or of
    plugin.json of the newest version when none serves (the wheels it carries, not read)."""
    if serving is not None:
        return [answer.as_json() for answer in serving.requirements]
    if newest is None:
        return []
    carried = bundle_wheels(newest.bundle) if newest.bundle is not None else []
    return [answer.as_json() for answer in plan(newest.manifest.requirements, carried, deep=False).resolved]


def version_summary(serving: str | None, failed: list[str]) -> str | None:
    """version_summary says in words which version serves and which failed: "serving 0.5.0, 0.6.0 failed"."""
    parts = ([f"serving {serving}"] if serving else []) + [f"{version} failed" for version in failed]
    return ", ".join(parts) or None


def task_view(name: str, spec: TaskSpec) -> dict[str, Any]:
    """task_view is how the admin API lists one of a plugin's tasks."""
    kind = "periodic" if spec.cron or spec.every else "task"
    return {"name": name, "kind": kind, "cron": spec.cron, "every": spec.every}


def refresh_sandbox(view: PluginView, serving: LoadedPlugin) -> None:
    """refresh_sandbox puts the state of the worker of `serving` (a sandboxed version) into its `view`: a crashed
    worker is also the view's error, until it runs again."""
    state: str = serving.sandbox.state
    crashed = f"its sandbox worker {state}"
    view.sandbox = {"state": state, "layers": dict(serving.sandbox.layers)}
    if state.startswith("crashed"):
        view.error = crashed
    elif view.error is not None and view.error.startswith("its sandbox worker crashed"):
        view.error = None
