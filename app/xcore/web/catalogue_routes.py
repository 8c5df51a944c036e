"""The catalogues' admin API: browse what the configured catalogues offer, fetch them again, install or update a
plugin from them (`xcore.plugins.catalogues`).

Admins browse (`plugins.read`). Installing is an upload in all but the source: the bundle is downloaded, held to
the catalogue's sha256 and to the signer it lists, then checked and installed as an upload is (every bundle rule,
its own signature, the policy, the blocklists, and the permission its running in process or sandboxed needs), audited as
`plugin.install`, and hot reloaded. An update is an install of a newer version.
"""

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, get, post
from litestar.params import JSONBody, Parameter
from msgspec import Meta, Struct

from xcore.auth.builtin import manage_permission
from xcore.plugins.bundle import Bundle
from xcore.plugins.catalogue import check_signer, download
from xcore.plugins.leftovers import TEMP_PREFIX
from xcore.plugins.manager import PluginManager
from xcore.plugins.store import install_bundle
from xcore.plugins.views import PluginView
from xcore.web.context import actor
from xcore.web.plugin_routes import audit_change, audited_signer, install_check, manager_of, view_of

TAGS = ["plugins"]


class InstallIn(Struct, forbid_unknown_fields=True):
    id: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{1,39}$", description="The plugin's id.")]
    version: Annotated[
        str | None, Meta(description="A version the catalogue lists; default: the newest that fits.")
    ] = None


def _installed(manager: PluginManager) -> dict[str, str | None]:
    return {pid: view.serving or view.version for pid, view in manager.views.items()}


@get("/api/admin/catalogue", tags=TAGS, summary="Browse the plugin catalogues")
async def browse(
    request: Request[Any, Any, Any],
    q: Annotated[str, Parameter(max_length=200, description="Words to find in an id, name or description.")] = "",
) -> dict[str, Any]:
    """The configured catalogues (name, signer, when fetched, or why they cannot be used) and the plugins they
    list: the newest release that fits this xcore, the version installed here, whether that is an update, the
    catalogues' notices and blocklist entries. The catalogues are fetched again when the last fetch is old."""
    actor(request, "plugins.read")
    manager = manager_of(request)
    if manager.catalogues.due():
        await manager.refresh_catalogues()
    return manager.catalogues.listing(_installed(manager), q)


@post("/api/admin/catalogue/refresh", tags=TAGS, status_code=200, summary="Fetch the plugin catalogues again")
async def refresh(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Fetch every catalogue now (a changed blocklist is applied at once), then answer as GET does."""
    actor(request, "plugins.read")
    manager = manager_of(request)
    await manager.refresh_catalogues()
    return manager.catalogues.listing(_installed(manager))


@post("/api/admin/catalogue/install", tags=TAGS, status_code=201, summary="Install or update a plugin")
async def install(request: Request[Any, Any, Any], data: JSONBody[InstallIn]) -> PluginView:
    """Download the plugin's newest release that fits this xcore (or `version`), hold it to the catalogue's
    sha256, and install it as an upload is installed: a 422 names the rule a bundle breaks (its signature, the
    policy, a blocklist), a 404 says what the catalogues have, a 502 why a download failed."""
    actor(request, manage_permission(sandboxed=True))
    manager = manager_of(request)
    offer = manager.catalogues.offer(data.id, data.version)
    name = f"{data.id}-{offer.release.version}.zip"
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=manager.folder)
    os.close(fd)  # download writes it whole, atomically
    try:
        await anyio.to_thread.run_sync(lambda: download(offer.release, Path(tmp)))
        check = install_check(request, manager, name)

        def allowed(bundle: Bundle) -> None:  # signed as the catalogue says, then as an upload is checked
            check_signer(name, offer.release, offer.catalogue.name, bundle.signer)
            check(bundle)

        bundle = await anyio.to_thread.run_sync(
            lambda: install_bundle(manager.runtime, Path(tmp), name=name, allowed=allowed)
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
    signer = await anyio.to_thread.run_sync(audited_signer, manager, bundle)
    await audit_change(
        request, "plugin.install", data.id, version=bundle.manifest.version, sha256=bundle.sha256,
        catalogue=offer.catalogue.name, signer=signer,
    )  # fmt: skip
    await manager.reconcile()
    return view_of(manager, data.id)


def catalogue_handlers() -> list[Any]:
    return [browse, refresh, install]
