"""`xcore catalogue build`, `xcore plugin search` and `xcore plugin update`: a team's catalogue, and finding and
updating plugins from the configured ones (`manager.plugins.catalogues`; plugins/README.md, "Catalogues").

`update` installs as `xcore plugin install` does, after the same refusals the server makes: a blocklist, the
signing policy. A running server's workers see the new zip and hot reload it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xcore.cli.options import data_dir_option, echo_table, migrated_runtime
from xcore.cli.output import echo

if TYPE_CHECKING:
    from xcore.plugins.catalogues import Catalogues
    from xcore.runtime import Runtime


@click.group()
def catalogue() -> None:
    """Make a signed catalogue of plugin bundles for a team to install from."""


@catalogue.command("build")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sign", "key", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
              help="The private key to sign the catalogue with (`xcore keys new`); required.")  # fmt: skip
@click.option("--base-url", default=None, metavar="URL",
              help="Where the bundles will be served from (default: beside index.json).")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the index (default: FOLDER/index.json).")  # fmt: skip
def build_command(folder: Path, key: Path | None, base_url: str | None, out: Path | None) -> None:
    """Build the signed index of the bundles (*.zip) in FOLDER, with the name, blocklist and notices of
    FOLDER/catalogue.json; serve FOLDER over https (or share it as a folder) and add its URL to
    manager.plugins.catalogues."""
    from xcore.plugins.catalogue import INDEX_FILE, build

    if key is None:
        raise click.UsageError("--sign KEY is required: a catalogue is always signed (`xcore keys new` makes a key)")
    if not folder.is_dir():
        raise click.UsageError(f"{folder}: no such folder")
    data = build(folder, key, base_url if base_url is None or base_url.endswith("/") else base_url + "/")
    target = out or folder / INDEX_FILE
    target.write_bytes(data)
    echo(f"wrote {target} ({len(data):,} bytes)")


def _catalogues(data_dir: str | None) -> tuple[Runtime, Catalogues]:
    from xcore.plugins.catalogues import Catalogues
    from xcore.plugins.store import catalogue_store, trust_store

    runtime = migrated_runtime(data_dir)
    sources = runtime.config.manager.plugins.catalogues
    if not sources:
        raise click.UsageError("no catalogue is configured: add one to manager.plugins.catalogues")
    found = Catalogues(sources, trust_store(runtime), catalogue_store(runtime), runtime.version)
    found.refresh()
    for source, error in found.errors.items():
        echo(f"catalogue {source}: {error}")
    return runtime, found


def _installed(runtime: Runtime) -> dict[str, str | None]:
    from packaging.version import Version

    from xcore.plugins.bundle import BundleError
    from xcore.plugins.store import installed_bundles

    have: dict[str, str | None] = {}
    for _path, bundle in installed_bundles(runtime):
        if isinstance(bundle, BundleError):
            continue
        version = bundle.manifest.version
        known = have.get(bundle.manifest.id)
        if known is None or Version(version) > Version(known):
            have[bundle.manifest.id] = version
    return have


@click.command("search")
@click.argument("words", required=False, default="")
@data_dir_option
def search(words: str, data_dir: str | None) -> None:
    """List the plugins the configured catalogues offer (those matching WORDS), with the newest release that fits
    this xcore and the version installed here."""
    runtime, found = _catalogues(data_dir)
    listing = found.listing(_installed(runtime), words)
    rows = [
        [p["id"], p["name"], (p["latest"] or {}).get("version") or "-", p["installed"] or "-",
         "update" if p["update"] else "", p["catalogue"]]
        for p in listing["plugins"]
    ]  # fmt: skip
    if not rows:
        echo("no plugin found" + (f" for {words!r}" if words else ""))
        return
    echo_table(["ID", "NAME", "LATEST", "INSTALLED", "", "CATALOGUE"], rows)


@click.command("update")
@click.argument("plugin_ids", nargs=-1)
@data_dir_option
def update(plugin_ids: tuple[str, ...], data_dir: str | None) -> None:
    """Install the newest release that fits this xcore of each installed plugin (or of PLUGIN_IDS) that a
    catalogue offers; a running server hot reloads them."""
    from packaging.version import Version

    from xcore.errors import XcoreError
    from xcore.plugins.bundle import Bundle
    from xcore.plugins.catalogue import Release, check_signer, download
    from xcore.plugins.manifest import Manifest
    from xcore.plugins.signing import Signer
    from xcore.plugins.store import blocked_here, install_bundle, policy_here, refuse_install, trust_store

    runtime, found = _catalogues(data_dir)
    have = _installed(runtime)
    wanted = list(plugin_ids) or sorted(have)
    trust = trust_store(runtime)

    def blocked(manifest: Manifest) -> str | None:
        return blocked_here(runtime, manifest) or found.blocked(manifest.id, manifest.version)

    def policy(signer: Signer | None) -> tuple[str | None, str | None]:
        return policy_here(runtime, signer, trust)

    def allowed(release: Release, catalogue: str) -> Callable[[Bundle], None]:
        def check(bundle: Bundle) -> None:  # signed as the catalogue says, then as the server checks an upload
            check_signer(bundle.path.name, release, catalogue, bundle.signer)
            refuse_install(bundle.path.name, bundle, blocked, policy)

        return check

    failed = 0
    for plugin_id in wanted:
        try:
            offer = found.offer(plugin_id)
        except XcoreError as exc:
            echo(f"{plugin_id}: {exc}")
            failed += 1 if plugin_id in plugin_ids else 0
            continue
        current = have.get(plugin_id)
        if current is not None and Version(offer.release.version) <= Version(current):
            echo(f"{plugin_id} {current} is up to date")
            continue
        with tempfile.TemporaryDirectory(prefix="xcore-update-") as tmp:
            name = f"{plugin_id}-{offer.release.version}.zip"
            try:
                path = download(offer.release, Path(tmp) / name)
                bundle = install_bundle(runtime, path, name=name, allowed=allowed(offer.release, offer.catalogue.name))
            except XcoreError as exc:
                echo(f"{plugin_id}: {exc}")
                failed += 1
                continue
        echo(f"{plugin_id}: {current or 'not installed'} -> {bundle.manifest.version} (from {offer.catalogue.name})")
    if failed:
        raise SystemExit(1)
