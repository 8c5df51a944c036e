"""The plugins folder and what the host keeps per plugin: install, list and remove bundles; purge their data.

The plugins folder (`manager.plugins.directory`, `<data>/plugins/` by default) is the source of truth for which
bundles exist; every worker's watcher converges on it. A bundle is written there atomically (a hidden temporary
file, then a rename), so a watcher never sees half of one. `<data>/plugin-data/<id>/` is the plugin's own data,
kept across upgrades, disabling and removal unless purged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sqlalchemy import delete, select

from xcore.config.schema import BlockedVersions
from xcore.db import notify
from xcore.db.models import Permission, PluginState, SettingOverride
from xcore.plugins.bundle import Bundle, BundleError, check_prefix, extract_bundle, host_fault, inspect_bundle
from xcore.plugins.contract import PLUGIN_ID
from xcore.plugins.errors import PluginNotFound, PluginStorageError
from xcore.plugins.index import IndexUnavailable, PackageIndex
from xcore.plugins.leftovers import CACHE_FOLDER, TEMP_PREFIX
from xcore.plugins.lock import WheelError
from xcore.plugins.manifest import Manifest
from xcore.plugins.requirements import Pins, Resolved, Unmet, bundle_wheels, plan
from xcore.plugins.signing import SignatureError, Signer, TrustStore, policy_says
from xcore.plugins.wheels import Libraries, WheelRef, install_libraries
from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")
# A change to this file tells every worker to re-read the plugins' enabled flags and config overrides.
STATE_MARKER = ".xcore-state"


def plugins_dir(runtime: Runtime) -> Path:
    """plugins_dir is the watched folder of bundles, created (mode 0700) when missing."""
    return runtime.data.subdir(runtime.config.manager.plugins.directory)


def plugin_data_dir(runtime: Runtime, plugin_id: str) -> Path:
    """plugin_data_dir is `<data>/plugin-data/<id>`, the plugin's `ctx.data_dir` (not created here)."""
    return runtime.data.root / "plugin-data" / plugin_id


def cache_dir(runtime: Runtime) -> Path:
    """cache_dir holds the extracted bundles, one folder per zip content."""
    return runtime.data.root / CACHE_FOLDER


def trust_store(runtime: Runtime) -> TrustStore:
    """trust_store is the public keys the operator trusts (`xcore.plugins.signing`), in the data directory."""
    return TrustStore(runtime.data.root / "trusted-keys.json")


def blocked_here(
    runtime: Runtime, manifest: Manifest, blocklist: Sequence[BlockedVersions] | None = None
) -> str | None:
    """blocked_here says why `manager.plugins.blocklist` blocks this version, or None: the `blocklist` given (the
    plugin manager's current one, `xcore.plugins.blocklist`), else the one the runtime started with."""
    version = Version(manifest.version)
    entries = runtime.config.manager.plugins.blocklist if blocklist is None else blocklist
    for entry in entries:
        if entry.id == manifest.id and version in SpecifierSet(entry.versions, prereleases=True):
            which = f"{entry.id} {entry.versions}".strip()
            return f"blocked: {entry.reason} (manager.plugins.blocklist: {which})"
    return None


def policy_here(runtime: Runtime, signer: Signer | None, trust: TrustStore) -> tuple[str | None, str | None]:
    """policy_here is what `manager.plugins.policy` makes of a bundle with this signer: (why it is refused, why it
    must run sandboxed) (`xcore.plugins.signing.policy_says`). A trust store that cannot be read trusts nobody,
    and says so in the log."""
    try:
        trusted = trust.trusted(signer)
    except SignatureError as exc:
        log.error("%s", exc, extra={"context": "plugins"})
        trusted = None
    return policy_says(runtime.config.manager.plugins.policy, signer, trusted)


def refuse_install(
    name: str,
    bundle: Bundle,
    blocked: Callable[[Manifest], str | None],
    policy: Callable[[Signer | None], tuple[str | None, str | None]],
) -> None:
    """refuse_install raises BundleError (rule `blocked` or `policy`, naming the bundle `name`) when a blocklist
    (`blocked`: why it blocks a version) or the signing policy (`policy`, as `policy_here` answers) refuses a
    checked bundle: what an upload, an install from a catalogue, `xcore plugin install` and `xcore plugin update`
    check before anything is written."""
    why = blocked(bundle.manifest)
    if why:
        raise BundleError(name, "blocked", why.removeprefix("blocked: "))
    refusal, _must = policy(bundle.signer)
    if refusal:
        raise BundleError(name, "policy", refusal.removeprefix("policy: "))


def catalogue_store(runtime: Runtime) -> Path:
    """catalogue_store keeps the last good copy of each catalogue (`xcore.plugins.catalogue.read`)."""
    return runtime.data.root / "catalogues"


def wheel_store(runtime: Runtime) -> Path:
    """wheel_store is where wheels downloaded from the package index (`manager.plugins.index_url`) and their
    pins are kept (`xcore.plugins.requirements.Pins`); unlike the cache, it is never collected."""
    return runtime.data.root / "plugin-wheels"


def install_requirements(
    runtime: Runtime, manifest: Manifest, fingerprint: str, carried: list[WheelRef]
) -> tuple[Libraries | None, list[Resolved]]:
    """install_requirements resolves the requirements of one version (`xcore.plugins.requirements.plan`) against
    this xcore, the wheels it `carried`, and the index of `manager.plugins.index_url` (its pins for this bundle
    first), and installs the wheels it needs into its library folder; returns the folder (None when no wheel is
    needed) and the answer to each requirement.

    Raises Unmet saying why a requirement is not met, WheelError naming the wheel and the rule it breaks,
    IndexUnavailable when the index cannot be asked, and OSError when this host's disk fails.
    """
    if not manifest.requirements:
        return None, []
    url = runtime.config.manager.plugins.index_url
    pins = Pins(wheel_store(runtime), manifest.id, fingerprint) if url else None
    wheels = carried + (pins.wheels() if pins is not None else [])
    index = PackageIndex(url, wheel_store(runtime)) if url else None
    answer = plan(manifest.requirements, wheels, index)
    problem = answer.problem()
    if problem:
        raise Unmet(problem)
    libraries = (
        install_libraries(cache_dir(runtime), manifest.id, answer.wheels, answer.data) if answer.wheels else None
    )
    if pins is not None:
        pins.record(answer.wheels)
    return libraries, answer.resolved


def is_bundle_file(path: Path) -> bool:
    """is_bundle_file is true for the `*.zip` files of the plugins folder, not for hidden temporary files."""
    return path.suffix.lower() == ".zip" and not path.name.startswith(".")


def bundle_files(runtime: Runtime) -> list[Path]:
    """bundle_files lists the plugins folder's zips, sorted by name."""
    return sorted(p for p in plugins_dir(runtime).iterdir() if is_bundle_file(p) and p.is_file())


def installed_bundles(runtime: Runtime) -> list[tuple[Path, Bundle | BundleError]]:
    """installed_bundles inspects every zip of the plugins folder: its Bundle, or the rule it breaks."""
    found: list[tuple[Path, Bundle | BundleError]] = []
    for path in bundle_files(runtime):
        try:
            found.append((path, inspect_bundle(path, runtime.version, default_entry=_entry(runtime))))
        except BundleError as exc:
            found.append((path, exc))
    return found


def taken_prefixes(runtime: Runtime, except_id: str) -> dict[str, str]:
    """taken_prefixes maps the URL prefix of every valid installed bundle of another plugin to its id."""
    return {
        b.manifest.prefix: b.manifest.id
        for _, b in installed_bundles(runtime)
        if isinstance(b, Bundle) and b.manifest.id != except_id
    }


def install_bundle(
    runtime: Runtime, source: Path, *, name: str | None = None, allowed: Callable[[Bundle], None] | None = None
) -> Bundle:
    """install_bundle checks `source`, extracts it into the cache (where its load finds it), and copies it into
    the plugins folder as `<id>-<version>.zip`, the version normalised (PEP 440: v1.0.0 is written 1.0.0).

    Raises BundleError (naming the rule, the entry, and `name` or the file's name) before anything is written to
    the plugins folder: a rule it breaks, or an entry that cannot be extracted. Raises PluginStorageError when
    this host's disk cannot take the extracted files. An installed zip of the same id and an equal version (1.0
    equals 1.0.0) is replaced, whatever its file name; other versions stay (the highest one is active).
    `allowed`, given the checked bundle, raises what refuses the caller (or the policy) before anything is
    extracted.
    """
    checked = _inspect_as(runtime, source, name or source.name)
    if allowed is not None:  # may the caller install this plugin (one in process, one sandboxed)? It raises if not
        allowed(checked)
    try:
        extract_bundle(checked, cache_dir(runtime))
        _install_requirements(runtime, checked, name or source.name)
    except BundleError as exc:
        if host_fault(exc):
            raise PluginStorageError(
                f"cannot install {name or source.name}: {exc.reason}; free space or fix "
                f"the permissions of {cache_dir(runtime)}, then try again"
            ) from None
        raise BundleError(name or source.name, exc.rule, exc.reason, exc.entry) from None
    manifest = checked.manifest
    folder = plugins_dir(runtime)
    target = folder / f"{manifest.id}-{manifest.version}.zip"
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".tmp")
    except OSError as exc:
        raise PluginStorageError(
            f"cannot write to {folder} ({exc.strerror}); free space or fix its permissions"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        settled(Path(tmp))
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PluginStorageError(
                f"cannot write {target} ({exc.strerror}); free space or fix its permissions"
            ) from None
        raise
    for same in same_version_files(runtime, manifest.id, manifest.version, keep=target):
        same.unlink(missing_ok=True)  # 1.0 and 1.0.0 are one version: the upload replaces it, whatever its name
    return Bundle(target, manifest, checked.sha256, checked.root, checked.entries, checked.wheels, checked.signer)


def same_version_files(runtime: Runtime, plugin_id: str, version: str, *, keep: Path) -> list[Path]:
    """same_version_files lists the other valid zips of the plugins folder holding `plugin_id` at a version equal
    to `version` under PEP 440 (1.0, 1.0.0 and v1.0.0 are one version), `keep` aside."""
    wanted = Version(version)
    return [
        path
        for path, bundle in installed_bundles(runtime)
        if path != keep
        and isinstance(bundle, Bundle)
        and bundle.manifest.id == plugin_id
        and Version(bundle.manifest.version) == wanted
    ]


def settled(path: Path) -> None:
    """settled dates a completely written file one second back, so a watcher need not wait to see it settle."""
    before = time.time() - 1.0
    os.utime(path, (before, before))


def _inspect_as(runtime: Runtime, source: Path, name: str) -> Bundle:
    try:
        checked = inspect_bundle(source, runtime.version, default_entry=_entry(runtime))  # once: hashes every entry
        check_prefix(name, checked.manifest, taken_prefixes(runtime, checked.manifest.id))  # other plugins' now
        return checked
    except BundleError as exc:
        raise BundleError(name, exc.rule, exc.reason, exc.entry) from None


def _install_requirements(runtime: Runtime, bundle: Bundle, name: str) -> None:
    """_install_requirements checks and unpacks the wheels a bundle needs before it is installed: raises BundleError
    (rule `requirements`, or the wheel's rule naming the wheel) for a requirement that cannot be met here. An
    index out of reach does not stop the install: its load asks again."""
    try:
        install_requirements(runtime, bundle.manifest, bundle.sha256, bundle_wheels(bundle))
    except Unmet as exc:
        raise BundleError(name, "requirements", str(exc).removeprefix("requirements: ")) from None
    except WheelError as exc:
        raise BundleError(name, exc.rule, f"wheel {exc.wheel}: {exc.reason}", exc.entry) from None
    except IndexUnavailable:
        return
    except OSError as exc:
        raise PluginStorageError(
            f"cannot install {name}: cannot write its wheels ({exc.strerror or exc}); free space or fix the "
            f"permissions of {cache_dir(runtime)}, then try again"
        ) from None


def _entry(runtime: Runtime) -> str:
    return runtime.config.manager.plugins.entry_point


def remove_plugin(runtime: Runtime, plugin_id: str, *, purge: bool) -> list[Path]:
    """remove_plugin deletes every zip of `plugin_id`; with `purge`, also its data, config and permissions.

    Returns what was deleted. Raises PluginNotFound when the host knows nothing of the id.
    """
    if not re.match(PLUGIN_ID, plugin_id):  # never let a crafted id reach the purge's rmtree
        raise PluginNotFound(f"{plugin_id!r} is not a plugin id")
    removed = [path for path, b in installed_bundles(runtime) if _id_of(path, b) == plugin_id]
    for path in removed:
        path.unlink(missing_ok=True)
    known = bool(removed)
    with runtime.auth.transaction() as session:
        state = session.get(PluginState, plugin_id)
        known = known or state is not None
        if purge:
            if state is not None:
                session.delete(state)
            session.execute(delete(SettingOverride).where(SettingOverride.scope == plugin_id))
            for permission in session.scalars(select(Permission).where(Permission.plugin_id == plugin_id)):
                session.delete(permission)
    data = plugin_data_dir(runtime, plugin_id)
    if purge and data.exists():
        shutil.rmtree(data)
        removed.append(data)
        known = True
    if not known:
        raise PluginNotFound(f"plugin {plugin_id!r} is not installed")
    signal_state_change(runtime)
    return removed


def _id_of(path: Path, bundle: Bundle | BundleError) -> str:
    if isinstance(bundle, Bundle):
        return bundle.manifest.id
    return path.stem.split("-", 1)[0]  # a broken zip installed as <id>-<version>.zip


def signal_state_change(runtime: Runtime) -> None:
    """signal_state_change touches the state marker, so every worker re-reads enabled flags and overrides; on a
    shared PostgreSQL database the other nodes' workers too, through a notification (`xcore.db.notify`)."""
    touch_state_marker(runtime)
    notify.publish(runtime.engine, notify.PLUGINS)


def touch_state_marker(runtime: Runtime) -> None:
    """touch_state_marker is this node's half of `signal_state_change`: its workers' watchers see the marker."""
    marker = plugins_dir(runtime) / STATE_MARKER
    marker.touch()
    os.utime(marker)
