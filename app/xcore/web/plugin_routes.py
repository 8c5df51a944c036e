"""The plugin admin API: list, upload, enable, disable, reload, configure and delete plugins.

Every change is written to the audit log, then applied by this worker's manager before the answer, so the
answer shows the outcome (active, or failed with the reason). The other workers follow through their watchers.

Admins read (`plugins.read`). A change needs `manage_permission(sandboxed)`: `plugins.manage` (superadmins only)
for a plugin any version of which runs in the server's process with its rights, since whoever changes what runs
there could make themselves anyone; `plugins.manage_sandboxed` (admins) when every version involved runs
sandboxed: the uploaded bundle (checked before anything is written), or every version of the plugin in the
folder and the one serving (`PluginManager.all_sandboxed`). A rescan of every plugin is a superadmin's.
"""

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, delete, get, post, put
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody, Parameter
from msgspec import Meta, Struct

from xcore.auth import audit
from xcore.auth.builtin import manage_permission
from xcore.db.models import PluginState
from xcore.errors import FieldProblem
from xcore.plugins.bundle import Bundle, BundleError
from xcore.plugins.errors import PluginConflict, PluginError, PluginNotFound, PluginStorageError, PluginUnavailable
from xcore.plugins.leftovers import TEMP_PREFIX
from xcore.plugins.manager import PluginManager
from xcore.plugins.settings import override_problems, replace_overrides
from xcore.plugins.signing import SignatureError
from xcore.plugins.store import install_bundle, refuse_install, remove_plugin, signal_state_change
from xcore.plugins.views import PluginView
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of

log = logging.getLogger("xcore.plugins")

PluginId = Annotated[str, Parameter(pattern=r"^[a-z][a-z0-9_]{1,39}$", description="The plugin's id.")]
MAX_UPLOAD = 100 * 1024 * 1024
TAGS = ["plugins"]


class ConfigIn(Struct, forbid_unknown_fields=True):
    overrides: Annotated[dict[str, Any], Meta(description="The complete set of overrides; {} restores the defaults.")]


class ConfigOut(Struct):
    defaults: dict[str, Any]
    overrides: dict[str, Any]
    effective: dict[str, Any]


class RemovedOut(Struct):
    id: str
    removed: list[str]
    purged: bool


def manager_of(request: Request[Any, Any, Any]) -> PluginManager:
    """manager_of is this worker's plugin manager; an app built without one (a test's) answers 503."""
    manager: PluginManager | None = request.app.state.plugins
    if manager is None:
        raise PluginUnavailable("plugins are not managed in this process")
    return manager


def change_permission(manager: PluginManager, plugin_id: str) -> str:
    """change_permission is what changing plugin `plugin_id` needs, as its view says (`manage_permission`:
    `plugins.manage_sandboxed` when every version of it runs sandboxed, else `plugins.manage`). A plugin the host
    does not know is answered 404 by the handler to whoever may change a sandboxed one."""
    view = manager.views.get(plugin_id)
    return view.manage_permission if view is not None else manage_permission(sandboxed=True)


def view_of(manager: PluginManager, plugin_id: str) -> PluginView:
    view = manager.views.get(plugin_id)
    if view is None:
        raise PluginNotFound(f"plugin {plugin_id!r} is not installed")
    return view


@get("/api/admin/plugins", tags=TAGS, summary="List plugins")
async def list_plugins(request: Request[Any, Any, Any]) -> list[PluginView]:
    """Every plugin the host knows: state (active, disabled, failed, pending), the error, its versions (the
    newest that loads is active, older ones superseded), routes, tasks, permissions and the zip's sha256."""
    actor(request, "plugins.read")
    return list(manager_of(request).views.values())


@get("/api/admin/plugins/{plugin_id:str}", tags=TAGS, summary="Show a plugin")
async def show_plugin(request: Request[Any, Any, Any], plugin_id: PluginId) -> PluginView:
    actor(request, "plugins.read")
    return view_of(manager_of(request), plugin_id)


@dataclass
class BundleUpload:
    """BundleUpload is the upload form: one file, the bundle, in the field `data`.

    A form whose `data` is text, or several files, is a 400 that says so. (With a bare `UploadFile` parameter,
    Litestar 2.25 fails with a 500 on a form that holds no single file.)"""

    data: UploadFile


@post(
    "/api/admin/plugins",
    tags=TAGS,
    summary="Upload a plugin bundle",
    request_max_body_size=MAX_UPLOAD,
)
async def upload_plugin(
    request: Request[Any, Any, Any],
    data: Annotated[
        BundleUpload, Body(media_type=RequestEncodingType.MULTI_PART, description="The bundle (.zip) in `data`.")
    ],
) -> PluginView:
    """Upload a `.zip` bundle as the multipart field `data`. It is checked against every bundle rule and
    extracted before it is written (a 422 names the rule and the entry, an entry that cannot be extracted too),
    then installed as `<id>-<version>.zip` (the version normalised), replacing an equal version (1.0 is 1.0.0).
    The answer shows whether it loaded. A bundle that runs in the server's process, with its rights, needs
    `plugins.manage` (superadmins); one that runs sandboxed `plugins.manage_sandboxed` (admins)."""
    actor(request, manage_permission(sandboxed=True))  # superadmins hold it too: the least either may do
    manager = manager_of(request)

    upload = data.data
    name = Path(upload.filename or "upload.zip").name
    # A hidden name in the plugins folder: the watchers ignore it, and it is on the same disk as the target.
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=manager.folder)
    except OSError as exc:
        await upload.close()
        raise PluginStorageError(f"cannot store the upload in {manager.folder} ({exc.strerror})") from None
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise PluginStorageError(f"cannot store the upload in {manager.folder} ({exc.strerror})") from None
        bundle = await anyio.to_thread.run_sync(
            lambda: install_bundle(manager.runtime, Path(tmp), name=name, allowed=install_check(request, manager, name))
        )
    except BundleError as exc:
        log.warning("plugin upload refused: %s", exc, extra={"context": "plugins"})
        raise
    finally:
        await upload.close()
        Path(tmp).unlink(missing_ok=True)
    manifest = bundle.manifest
    signer = await anyio.to_thread.run_sync(audited_signer, manager, bundle)
    await audit_change(
        request, "plugin.upload", manifest.id, version=manifest.version, sha256=bundle.sha256, file=name, signer=signer
    )
    await manager.reconcile()
    return view_of(manager, manifest.id)


def audited_signer(manager: PluginManager, bundle: Bundle) -> dict[str, Any] | None:
    """audited_signer is what the audit log keeps of who signed an installed bundle: the signer's name, the key id
    and whether this host trusts that key (`trusted`); None for an unsigned bundle. A trust store that cannot be
    read trusts nobody."""
    if bundle.signer is None:
        return None
    try:
        trusted = manager.trust.trusted(bundle.signer) is not None
    except SignatureError:
        trusted = False
    return {"name": bundle.signer.name, "key_id": bundle.signer.key_id, "trusted": trusted}


def install_check(request: Request[Any, Any, Any], manager: PluginManager, name: str) -> Callable[[Bundle], None]:
    """install_check is what refuses a checked bundle before it is installed: a blocklist, the signing policy,
    and the permission its running in process or sandboxed needs of the user."""

    def allowed(bundle: Bundle) -> None:
        refuse_install(name, bundle, manager.blocked, manager.policy)
        actor(request, manage_permission(manager.runs_sandboxed(bundle)))

    return allowed


@post("/api/admin/plugins/reload", tags=TAGS, status_code=200, summary="Rescan the plugins folder")
async def reload_all(request: Request[Any, Any, Any]) -> list[PluginView]:
    """Re-reads every bundle and retries versions that failed before, in this worker and (through the
    watchers) in the others."""
    actor(request, manage_permission())  # every plugin: a superadmin's
    manager = manager_of(request)
    await anyio.to_thread.run_sync(signal_state_change, manager.runtime)
    await manager.reconcile(force=True)
    await audit_change(request, "plugin.rescan", None)
    return list(manager.views.values())


@post("/api/admin/plugins/{plugin_id:str}/reload", tags=TAGS, status_code=200, summary="Reload a plugin")
async def reload_plugin(request: Request[Any, Any, Any], plugin_id: PluginId) -> PluginView:
    """Imports the plugin afresh and runs `on_unload` then `on_load`, as an upgrade would."""
    manager = manager_of(request)
    actor(request, change_permission(manager, plugin_id))
    view_of(manager, plugin_id)
    await manager.reconcile(force=True, reload=[plugin_id])
    await audit_change(request, "plugin.reload", plugin_id)
    return view_of(manager, plugin_id)


@post("/api/admin/plugins/{plugin_id:str}/enable", tags=TAGS, status_code=200, summary="Enable a plugin")
async def enable_plugin(request: Request[Any, Any, Any], plugin_id: PluginId) -> PluginView:
    return await _set_enabled(request, plugin_id, True)


@post("/api/admin/plugins/{plugin_id:str}/disable", tags=TAGS, status_code=200, summary="Disable a plugin")
async def disable_plugin(request: Request[Any, Any, Any], plugin_id: PluginId) -> PluginView:
    """Unmounts the plugin's routes and unregisters its tasks; its data and settings stay. Survives restarts."""
    return await _set_enabled(request, plugin_id, False)


async def _set_enabled(request: Request[Any, Any, Any], plugin_id: str, enabled: bool) -> PluginView:
    manager = manager_of(request)
    who = actor(request, change_permission(manager, plugin_id))
    view_of(manager, plugin_id)

    def store() -> None:
        with manager.runtime.auth.transaction() as session:
            row = session.get(PluginState, plugin_id) or PluginState(plugin_id=plugin_id)
            row.enabled = enabled
            session.add(row)
            audit.record(
                session, "plugin.enable" if enabled else "plugin.disable", actor=who.username, target=plugin_id,
                ip=client_of(request).ip,
            )  # fmt: skip
        signal_state_change(manager.runtime)

    await anyio.to_thread.run_sync(store)
    await manager.reconcile()
    return view_of(manager, plugin_id)


@delete("/api/admin/plugins/{plugin_id:str}", tags=TAGS, summary="Remove a plugin", status_code=200)
async def remove(
    request: Request[Any, Any, Any],
    plugin_id: PluginId,
    purge: Annotated[bool, Parameter(description="Also delete its data folder, settings and permissions.")] = False,
) -> RemovedOut:
    """Deletes the plugin's zips, which unmounts it. Its data, settings and permissions are kept unless
    `purge=true`. A plugin loaded from a `--plugins-dev` folder cannot be removed here."""
    manager = manager_of(request)
    actor(request, change_permission(manager, plugin_id))
    view = manager.views.get(plugin_id)
    if view is not None and view.source == "dev":
        raise PluginConflict(f"plugin {plugin_id!r} is loaded from a dev folder; delete the folder instead")
    async with manager.paused():  # a reconcile under way would record the plugin's state again after a purge
        removed = await anyio.to_thread.run_sync(lambda: remove_plugin(manager.runtime, plugin_id, purge=purge))
    await audit_change(request, "plugin.remove", plugin_id, purge=purge, removed=[p.name for p in removed])
    await manager.reconcile()
    return RemovedOut(plugin_id, [p.name for p in removed], purge)


@get("/api/admin/plugins/{plugin_id:str}/config", tags=TAGS, summary="Show a plugin's settings")
async def get_config(request: Request[Any, Any, Any], plugin_id: PluginId) -> ConfigOut:
    """The defaults from the bundle, the admin's overrides, and the merged settings the plugin sees."""
    actor(request, "plugins.read")
    manager = manager_of(request)
    view_of(manager, plugin_id)
    defaults, overrides, effective = await manager.settings_of(plugin_id)
    return ConfigOut(defaults, overrides, effective)


@put("/api/admin/plugins/{plugin_id:str}/config", tags=TAGS, summary="Change a plugin's settings")
async def put_config(request: Request[Any, Any, Any], plugin_id: PluginId, data: JSONBody[ConfigIn]) -> ConfigOut:
    """Replaces the overrides. Each must name a setting of the bundle's defaults and keep its type; a 400 lists
    every one that does not. The plugin reloads with the new settings."""
    manager = manager_of(request)
    who = actor(request, change_permission(manager, plugin_id))
    view_of(manager, plugin_id)
    defaults, _, _ = await manager.settings_of(plugin_id)
    problems = override_problems(defaults, data.overrides)
    if problems:
        where, what = problems[0]
        fields = [FieldProblem(f"overrides.{key}", message) for key, message in problems]
        raise PluginError(f"overrides.{where}: {what}", field=f"overrides.{where}", fields=fields)

    def store() -> None:
        with manager.runtime.auth.transaction() as session:
            replace_overrides(session, plugin_id, data.overrides, who.username)
            audit.record(
                session, "plugin.config", actor=who.username, target=plugin_id, ip=client_of(request).ip,
                keys=sorted(data.overrides),
            )  # fmt: skip
        signal_state_change(manager.runtime)

    await anyio.to_thread.run_sync(store)
    await manager.reconcile()
    defaults, overrides, effective = await manager.settings_of(plugin_id)
    return ConfigOut(defaults, overrides, effective)


async def audit_change(request: Request[Any, Any, Any], action: str, target: str | None, **detail: Any) -> None:
    who = actor(request)
    runtime: Runtime = request.app.state.runtime

    def write() -> None:
        with runtime.auth.transaction() as session:
            audit.record(session, action, actor=who.username, target=target, ip=client_of(request).ip, **detail)

    await anyio.to_thread.run_sync(write)


def plugin_handlers() -> list[Any]:
    return [
        list_plugins, upload_plugin, reload_all, show_plugin, reload_plugin, enable_plugin, disable_plugin, remove,
        get_config, put_config,
    ]  # fmt: skip
