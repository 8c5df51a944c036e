"""`xcore plugin new | pack | install | list | remove | runtime`: the plugin author kit, and bundle management.

`new` and `pack` work on a source folder and need no data directory. `install`, `list` and `remove` act on the
data directory's plugins folder, which a running server watches: an installed zip goes live there within
seconds, and a removed one is unloaded. `runtime` lists what a plugin may import, from this process alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xcore import __version__
from xcore.cli.options import data_dir_option, echo_table, migrated_runtime
from xcore.cli.output import echo
from xcore.errors import XcoreError

if TYPE_CHECKING:
    from xcore.db.models import PluginState
    from xcore.plugins.bundle import Bundle, BundleError
    from xcore.plugins.importable import PluginRuntime
    from xcore.runtime import Runtime

GIT_TIMEOUT = 300.0
# scp-like git addresses: git@github.com:owner/repo.git
SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


class GitError(XcoreError):
    """GitError is a git repository that could not be cloned, or a machine without git."""

    exit_code = 2


@click.group()
def plugin() -> None:
    """Write, pack and install plugins."""


@plugin.command("new")
@click.argument("name")
@click.option(
    "--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Parent folder."
)
def new(name: str, parent: Path) -> None:
    """Create the folder PARENT/NAME holding a small working plugin with its tests."""
    from xcore.plugins.scaffold import create_scaffold, next_steps

    folder = create_scaffold(parent, name)
    echo(f"created {folder}")
    for line in next_steps(folder):
        echo(line)


@plugin.command("pack")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Output folder."
)
@click.option("--wheels", is_flag=True, help="Download the wheels of plugin.json's requirements into the bundle.")
@click.option(
    "--platform", "platforms", multiple=True, metavar="TAG",
    help="A platform to pack wheels for (repeat it): a pip platform tag, or linux, linux-arm, macos, macos-intel, "
    "windows. Default: this machine's.",
)  # fmt: skip
@click.option("--python-version", metavar="X.Y", help="The Python to pack wheels for. Default: this xcore's.")
@click.option(
    "--find-links", multiple=True, type=click.Path(path_type=Path), help="A folder of wheels for pip to look in."
)
@click.option("--index-url", metavar="URL", help="The package index pip downloads from, instead of its own.")
@click.option("--no-index", is_flag=True, help="Take wheels from --find-links folders only (offline).")
@click.option(
    "--python", "pip_python", type=click.Path(dir_okay=False, path_type=Path),
    help="The Python whose pip downloads the wheels. Default: this one (python3 on the PATH for the binary).",
)  # fmt: skip
@click.option(
    "--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
    help="Sign the bundle with this private key (`xcore keys new`).",
)  # fmt: skip
def pack(
    folder: Path, out_dir: Path, wheels: bool, platforms: tuple[str, ...], python_version: str | None,
    find_links: tuple[Path, ...], index_url: str | None, no_index: bool, pip_python: Path | None,
    sign_key: Path | None,
) -> None:  # fmt: skip
    """Pack the plugin FOLDER into OUT/<id>-<version>.zip; print its path and sha256, and the wheels it holds."""
    from xcore.plugins.pack import folder_manifest, pack_folder
    from xcore.plugins.wheelhouse import WheelOptions, download_wheels

    with tempfile.TemporaryDirectory(prefix="xcore-wheels-") as tmp:
        downloaded: list[Path] = []
        if wheels:
            options = WheelOptions(
                platforms, python_version or WheelOptions.python_version, find_links, index_url, no_index, pip_python
            )
            downloaded = download_wheels(folder, folder_manifest(folder), options, Path(tmp))
        elif platforms or python_version or find_links or index_url or no_index or pip_python:
            raise click.UsageError(
                "--platform, --python-version, --find-links, --index-url, --no-index and --python choose the "
                "wheels of --wheels; add --wheels"
            )
        path = pack_folder(folder, out_dir, __version__, downloaded, sign_key).absolute()
    echo(str(path))
    echo(f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(".whl"):
                echo(f"wheel {name.rsplit('/', 1)[-1]}")


@plugin.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
def verify(bundle: Path, data_dir: str | None) -> None:
    """Check the bundle BUNDLE and its signature: print who signed it and whether this host trusts them, and what
    its policy (manager.plugins.policy) makes of it. Exit 1 when it is unsigned or the signer is not trusted,
    2 when the bundle or its signature is broken."""
    from xcore.plugins.bundle import inspect_bundle
    from xcore.plugins.signing import policy_says
    from xcore.plugins.store import trust_store

    runtime = migrated_runtime(data_dir)
    checked = inspect_bundle(bundle, runtime.version, default_entry=runtime.config.manager.plugins.entry_point)
    signer = checked.signer
    trusted = trust_store(runtime).trusted(signer)
    echo(f"{checked.manifest.id} {checked.manifest.version}  sha256 {checked.sha256}")
    if signer is None:
        echo("unsigned")
    else:
        echo(f"signed by {signer.name!r} (key {signer.key_id}); the signature holds")
        advice = "not trusted here: `xcore trust add <their .pub>` trusts it"
        echo(f"trusted as {trusted.name!r}" if trusted else advice)
    policy = runtime.config.manager.plugins.policy
    refusal, must = policy_says(policy, signer, trusted)
    echo(f"policy {policy}: " + (refusal or (f"runs sandboxed ({must})" if must else "may run")))
    if trusted is None:
        sys.exit(1)


@plugin.command("install")
@click.argument("source")
@data_dir_option
def install(source: str, data_dir: str | None) -> None:
    """Install SOURCE: a bundle .zip, a plugin folder, or a git repository (URL, file:// URL or local path).
    It is refused, before anything is written, as an upload is: by a blocklist (manager.plugins.blocklist, or a
    catalogue's as last fetched) and by the signing policy (manager.plugins.policy)."""
    from xcore.plugins.pack import pack_folder
    from xcore.plugins.store import install_bundle

    runtime = migrated_runtime(data_dir)
    with tempfile.TemporaryDirectory(prefix="xcore-install-") as tmp:
        work = Path(tmp)
        local = Path(source)
        if local.is_file():
            zip_path, name = local, local.name
        elif local.is_dir() and not (local / ".git").exists():
            zip_path, name = pack_folder(local, work / "out", runtime.version), source
        elif local.is_dir() or "://" in source or SCP_LIKE.match(source):
            zip_path, name = pack_folder(_clone(source, work / "src"), work / "out", runtime.version), source
        else:
            raise click.UsageError(f"{source}: no such file or folder, and not a git URL")
        bundle = install_bundle(runtime, zip_path, name=name, allowed=_install_check(runtime, name))
    echo(f"installed {bundle.manifest.id} {bundle.manifest.version} as {bundle.path}")
    echo(f"sha256 {bundle.sha256}")


def _install_check(runtime: Runtime, name: str) -> Callable[[Bundle], None]:
    """_install_check refuses a checked bundle as the server refuses an upload (`store.refuse_install`): the local
    blocklist, the catalogues' blocklists as last fetched (no network), and the signing policy."""
    from xcore.plugins.catalogues import Catalogues
    from xcore.plugins.manifest import Manifest
    from xcore.plugins.signing import Signer
    from xcore.plugins.store import blocked_here, catalogue_store, policy_here, refuse_install, trust_store

    trust = trust_store(runtime)
    kept = Catalogues(runtime.config.manager.plugins.catalogues, trust, catalogue_store(runtime), runtime.version)
    kept.load_kept()

    def blocked(manifest: Manifest) -> str | None:
        return blocked_here(runtime, manifest) or kept.blocked(manifest.id, manifest.version)

    def policy(signer: Signer | None) -> tuple[str | None, str | None]:
        return policy_here(runtime, signer, trust)

    return lambda bundle: refuse_install(name, bundle, blocked, policy)


def _clone(source: str, target: Path) -> Path:
    """_clone makes a shallow clone of `source` into `target`, never asking for a password; raises GitError."""
    git = shutil.which("git")
    if git is None:
        raise GitError(f"cannot install {source}: git is not installed; install git, or pass a .zip")
    url = Path(source).resolve().as_uri() if Path(source).is_dir() else source  # --depth works on file:// only
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    try:
        result = subprocess.run(
            [git, "clone", "--depth", "1", "--quiet", "--", url, str(target)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git clone {source} did not finish within {GIT_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise GitError(f"git clone {source} failed: {reason}")
    return target


@plugin.command("list")
@data_dir_option
def list_plugins(data_dir: str | None) -> None:
    """List the installed plugins, one row each: enabled or not, the version serving, the versions that failed
    (a broken zip by its file name), the other versions, who signed the newest and whether this host trusts
    them, and the state a server last recorded."""
    from packaging.version import Version
    from sqlalchemy import select

    from xcore.db.models import PluginState
    from xcore.plugins.bundle import Bundle
    from xcore.plugins.store import installed_bundles, plugins_dir, trust_store

    runtime = migrated_runtime(data_dir)
    trust = trust_store(runtime)
    found = installed_bundles(runtime)
    if not found:
        echo(f"no plugins in {plugins_dir(runtime)}; `xcore plugin install FILE.zip` adds one")
        return
    with runtime.sessions() as session:
        states = {s.plugin_id: s for s in session.scalars(select(PluginState))}
    by_id: dict[str, list[tuple[Path, Bundle | BundleError]]] = {}
    for path, bundle in found:
        plugin_id = bundle.manifest.id if isinstance(bundle, Bundle) else path.stem.split("-", 1)[0]
        by_id.setdefault(plugin_id, []).append((path, bundle))
    rows: list[tuple[str, ...]] = []
    for plugin_id, bundles in sorted(by_id.items()):
        state = states.get(plugin_id)
        enabled = "no" if state is not None and not state.enabled else "yes"  # enabled unless disabled
        serving, failed, others = _versions_of(bundles, state)
        good = [b for _, b in bundles if isinstance(b, Bundle)]
        newest = max(good, key=lambda b: Version(b.manifest.version)) if good else None
        signer = newest.signer if newest is not None else None
        trusted = trust.trusted(signer)
        signed = "unsigned" if signer is None else f"{signer.name} ({'trusted' if trusted else 'not trusted'})"
        rows.append((plugin_id, enabled, serving or "-", ", ".join(failed) or "-", ", ".join(others) or "-",
                     signed, _state_text(state)))  # fmt: skip
    echo_table(("ID", "ENABLED", "SERVING", "FAILED", "OTHERS", "SIGNED", "STATE"), rows)


def _versions_of(
    bundles: list[tuple[Path, Bundle | BundleError]], state: PluginState | None
) -> tuple[str | None, list[str], list[str]]:
    """_versions_of sorts one plugin's zips, newest first, into (the version serving, the failed ones, the others
    with their state). A zip that breaks a bundle rule failed, named by its file and rule; the others are matched
    by sha256 with the versions a server last recorded (`plugin_state.versions`); one no server saw is "new"."""
    from packaging.version import Version

    from xcore.plugins.bundle import Bundle

    recorded = {v.get("sha256"): v for v in (state.versions or []) if v.get("sha256")} if state else {}
    serving: str | None = None
    failed: list[str] = []
    others: list[str] = []
    zips = [b for _, b in bundles if isinstance(b, Bundle)]
    for bundle in sorted(zips, key=lambda b: Version(b.manifest.version), reverse=True):
        version = bundle.manifest.version
        seen = recorded.get(bundle.sha256, {}).get("state")
        if seen is None and state is not None and not state.versions and state.version == version:
            seen = state.state  # recorded by an older xcore, which kept the plugin's state only
        if seen == "active":
            serving = version
        elif seen == "failed":
            failed.append(version)
        else:
            others.append(f"{version} {seen or 'new'}")
    failed += [f"{path.name} ({b.rule})" for path, b in bundles if not isinstance(b, Bundle)]
    return serving, failed, others


def _state_text(state: PluginState | None) -> str:
    """_state_text is the last state a server recorded, with the first line of its error; "-" when none."""
    if state is None:
        return "-"
    text = f"{state.state} {state.version or ''}".rstrip()
    error = (state.error or "").strip()
    return f"{text}: {error.splitlines()[0]}" if error else text


@plugin.command("remove")
@click.argument("plugin_id", metavar="ID")
@click.option("--purge", is_flag=True, help="Also delete the plugin's data, settings and permissions.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
def remove(plugin_id: str, purge: bool, yes: bool, data_dir: str | None) -> None:
    """Remove every installed zip of the plugin ID; its data is kept unless --purge."""
    from xcore.plugins.contract import PLUGIN_ID
    from xcore.plugins.store import remove_plugin

    if not re.match(PLUGIN_ID, plugin_id):
        raise click.BadParameter(f"{plugin_id!r} is not a plugin id; `xcore plugin list` shows them", param_hint="ID")
    runtime = migrated_runtime(data_dir)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("no terminal to confirm on; add --yes to remove without asking")
        what = "remove the plugin and DELETE its data, settings and permissions" if purge else "remove the plugin"
        click.confirm(f"{plugin_id}: {what}?", abort=True)
    for path in remove_plugin(runtime, plugin_id, purge=purge):
        echo(f"deleted {path}")


@plugin.command("runtime")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: frozen, stdlib, packages (module, distribution, version)."
)
def runtime_modules(as_json: bool) -> None:
    """List what a plugin may import in this xcore: standard-library modules and packages, with their versions."""
    from xcore.plugins.importable import list_importable

    found = list_importable()
    if as_json:
        echo(json.dumps(found.as_json(), indent=2), lines=True)
    else:
        _echo_runtime(found)


def _echo_runtime(found: PluginRuntime) -> None:
    """_echo_runtime prints the kind of install, the standard library wrapped in lines, and a table of packages."""
    from xcore.plugins.importable import STDLIB_LEFT_OUT

    if found.frozen:
        echo("frozen build: plugins may import these modules and nothing else")
    else:
        echo(
            "source install: plugins may import anything installed in this Python environment (listed below); "
            "a frozen build contains only the standard library and xcore's own dependencies, see `plugins/README.md`"
        )
    echo("")
    left_out = ", ".join(STDLIB_LEFT_OUT)
    why = "left out of this build" if found.frozen else "not listed, as a frozen build leaves them out"
    echo(f"standard library: {len(found.stdlib)} modules ({why}: {left_out})")
    echo(textwrap.fill(" ".join(found.stdlib), width=110, initial_indent="  ", subsequent_indent="  "), lines=True)
    echo("")
    echo(f"packages: {len(found.packages)}")
    rows = [
        (
            "  " + p.module,
            p.distribution or "-",
            p.version or "-",
            "plugins import only xcore.sdk from it" if p.module == "xcore" else "",
        )
        for p in found.packages
    ]
    echo_table(("  MODULE", "DISTRIBUTION", "VERSION", "NOTE"), rows)
