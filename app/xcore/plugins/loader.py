"""Loading one plugin: import its extracted folder under a unique module name and collect what it declares.

Every load gets a new package name (`xcore_plugin_<id>_<n>`), so a new version imports beside the old one while
the old one still serves, and nothing of the old one is reused by accident. Modules inside a bundle import each
other relatively (`from . import models`). `unload_modules` drops a retired load's modules from `sys.modules`.

Every name read from the entry module (`router`, the hooks), the config files, the static folder and the time a
hook may take are the plugin contract's (`xcore.plugins.contract`). Nothing here touches the web app or the
database: the manager mounts `LoadedPlugin.mount` and runs the hooks.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import anyio.to_thread
import yaml
from litestar import Router
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from litestar.static_files import create_static_files_router

from xcore.auth.builtin import PERMISSIONS
from xcore.build import frozen
from xcore.errors import XcoreError
from xcore.plugins import contract
from xcore.plugins.bundle import page_files_missing
from xcore.plugins.contract import CONFIG_FILES, CTX, HOOK_TIMEOUT, ROUTER, STATIC_FOLDER, xcore_import
from xcore.plugins.manifest import Manifest
from xcore.plugins.pack import python_sources
from xcore.plugins.requirements import Resolved
from xcore.plugins.signing import Signer
from xcore.plugins.wheels import Libraries
from xcore.sdk import PluginContext, TaskSpec
from xcore.tasks.schedule import cron_check

_numbers = itertools.count(1)
LIFECYCLE = (contract.on_load.__name__, contract.on_unload.__name__)  # the hooks `run_hook` runs


class PluginLoadError(XcoreError):
    """PluginLoadError says why a plugin could not load: the file and line of an import error, or its hook's."""


class PluginNotYet(PluginLoadError):
    """PluginNotYet says why a version cannot load now for a reason outside it (another plugin holds a version of
    a package it needs, the package index is out of reach): unlike other failures, it is tried again at the
    next reconcile."""


@dataclass
class LoadedPlugin:
    """LoadedPlugin is one imported version of a plugin, ready to mount: its routes, tasks and hooks."""

    manifest: Manifest
    source: Path  # the zip, or the dev folder
    fingerprint: str  # the zip's sha256, or the dev folder's content stamp
    folder: Path  # what was imported
    package: str  # the unique package name
    context: PluginContext
    mount: Router
    tasks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    on_load: Callable[..., Any] | None = None
    on_unload: Callable[..., Any] | None = None
    health: Callable[..., Any] | None = None  # the entry module's `health`, which `xcore.plugins.health` runs
    last_health: Any = None  # its last `xcore.plugins.health.PluginHealth`; None until it is checked
    health_running: bool = False  # a check of it is under way (a stuck sync one: its thread still runs)
    dev: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    config_stamp: str = ""  # the admin overrides this load runs with, as sorted JSON
    sandbox: Any = None  # the `xcore.plugins.sandbox.SandboxedPlugin` that runs a sandboxed version; None in process
    libraries: Libraries | None = None  # the folder of the wheels it imports (`xcore.plugins.wheels`)
    requirements: list[Resolved] = field(default_factory=list)  # what meets each requirement, as installed
    signer: Signer | None = None  # who signed the bundle, its signature checked; None: unsigned or a dev folder

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def version(self) -> str:
        return self.manifest.version

    def task_specs(self) -> dict[str, TaskSpec]:
        return {name: fn.__xcore_task__ for name, fn in self.tasks.items()}  # type: ignore[attr-defined]


def read_defaults(folder: Path) -> dict[str, Any]:
    """read_defaults reads the bundle's default settings from the first of CONFIG_FILES it has; {} if none."""
    for name in CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise PluginLoadError(f"{name}: cannot be read: {_one_line(exc)}") from None
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise PluginLoadError(f"{name}: the settings must be a mapping of names to values")
        return data
    return {}


def import_plugin(
    manifest: Manifest, folder: Path, *, source: Path, fingerprint: str, data_dir: Path, config: Mapping[str, Any],
    dev: bool = False, kv: Any = None, cache: Any = None,
) -> LoadedPlugin:  # fmt: skip
    """import_plugin imports the entry module of `folder` under a new package name and collects its parts.

    `kv` is the plugin's `ctx.kv` (`xcore.plugins.kv.KeyValue` in the host, the host's answer in a sandbox), and
    `cache` its `ctx.cache` (`xcore.plugins.cache.PluginCache` in the host, `RemoteCache` in a sandbox).
    Raises PluginLoadError naming the file and line at fault. Runs in a worker thread: imports may be slow. A dev
    folder's sources are checked first, as `inspect_bundle` checks a zip's: they import only xcore.sdk from xcore.
    """
    if dev:
        _check_imports(folder)
        files = {p.relative_to(folder).as_posix() for p in (folder / STATIC_FOLDER).rglob("*") if p.is_file()}
        for missing in page_files_missing(manifest, files):
            raise PluginLoadError(f"pages: {missing} is not in the plugin folder")
    package = f"xcore_plugin_{manifest.id}_{next(_numbers)}"
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    root = importlib.util.module_from_spec(spec)
    root.__path__ = [str(folder)]
    sys.modules[package] = root
    if dev:
        _fresh_sources(folder)
    try:
        module = importlib.import_module(f"{package}.{manifest.entry}")
    except BaseException as exc:
        unload_modules(package)
        raise PluginLoadError(_import_failure(exc, folder)) from None
    try:
        context = PluginContext(manifest.id, manifest.version, data_dir, MappingProxyType(dict(config)), kv, cache)
        return LoadedPlugin(
            manifest=manifest,
            source=source,
            fingerprint=fingerprint,
            folder=folder,
            package=package,
            context=context,
            mount=_mount(manifest, module, folder, context),
            tasks=_tasks(manifest, package),
            on_load=_hook(module, contract.on_load.__name__),
            on_unload=_hook(module, contract.on_unload.__name__),
            health=_hook(module, contract.health.__name__),
            dev=dev,
        )
    except BaseException:
        unload_modules(package)
        raise


def _check_imports(folder: Path) -> None:
    """_check_imports raises PluginLoadError when a Python source of `folder` imports xcore other than xcore.sdk."""
    for path in python_sources(folder):
        relative = path.relative_to(folder).as_posix()
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise PluginLoadError(f"{relative}: cannot be read ({exc.strerror or exc})") from None
        refusal = xcore_import(source, relative)
        if refusal:
            raise PluginLoadError(refusal)


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """_SourceOnlyLoader compiles from the source every time, never reading or writing `__pycache__`.

    The bytecode cache trusts a source's size and its mtime in whole seconds, so an edit of the same size saved
    within a second of the previous one would import the stale compiled file. Dev folders are edited.
    """

    def path_stats(self, path: str) -> Any:
        raise OSError("dev plugin folders are always compiled from source")


_dev_roots: set[Path] = set()


def _dev_path_hook(entry: str) -> importlib.machinery.FileFinder:
    path = Path(entry)
    if not any(path == root or path.is_relative_to(root) for root in _dev_roots):
        raise ImportError("not a dev plugin folder")  # the next path hook handles it
    return importlib.machinery.FileFinder(entry, (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES))


def _fresh_sources(folder: Path) -> None:
    """_fresh_sources makes imports from `folder` (a dev folder) compile its current sources, uncached."""
    if _dev_path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _dev_path_hook)
    _dev_roots.add(folder)
    # list() copies the keys in one step: other threads import meanwhile (the worker's warm-up, handlers).
    for entry in [e for e in list(sys.path_importer_cache) if Path(e) == folder or Path(e).is_relative_to(folder)]:
        sys.path_importer_cache.pop(entry, None)  # drops stale finders and their cached directory listings


def _mount(manifest: Manifest, module: ModuleType, folder: Path, ctx: PluginContext) -> Router:
    """_mount wraps the plugin's routes in a Router at its prefix that provides `ctx` and sets its OpenAPI tags."""
    declared = getattr(module, ROUTER, None)
    handlers: list[Any]
    if declared is None:
        handlers = []
    elif isinstance(declared, Router):
        handlers = [declared]
    elif isinstance(declared, list | tuple) and all(isinstance(h, BaseRouteHandler | Router) for h in declared):
        handlers = list(declared)
    else:
        what = f"a Router or a list of route handlers, not {type(declared).__name__}"
        raise PluginLoadError(f"{manifest.entry}.py: `{ROUTER}` must be {what}")
    static = folder / STATIC_FOLDER
    if static.is_dir():
        files = create_static_files_router(path=f"/{STATIC_FOLDER}", directories=[static], include_in_schema=False)
        handlers.append(files)

    def provide_ctx() -> PluginContext:
        return ctx

    return Router(
        path=manifest.prefix,
        route_handlers=handlers,
        dependencies={CTX: Provide(provide_ctx, use_cache=True, sync_to_thread=False)},
        tags=manifest.tags or [manifest.id],
    )


def _tasks(manifest: Manifest, package: str) -> dict[str, Callable[..., Any]]:
    """_tasks finds the functions marked by `task`/`periodic` in the plugin's modules, named `<id>.<function>`."""
    found: dict[str, Callable[..., Any]] = {}
    for name, module in list(sys.modules.items()):
        if name != package and not name.startswith(package + "."):
            continue
        for value in vars(module).values():
            if callable(value) and hasattr(value, "__xcore_task__") and getattr(value, "__module__", "") == name:
                task_name = f"{manifest.id}.{value.__name__}"
                unknown = [
                    p for p in value.__xcore_task__.requires if p not in PERMISSIONS and p not in manifest.permissions
                ]
                if unknown:
                    raise PluginLoadError(
                        f"task {task_name}: requires {', '.join(unknown)}, which is neither a core permission nor "
                        "one in the manifest's `permissions`"
                    )
                cron = value.__xcore_task__.cron
                if cron:
                    try:
                        cron_check(cron)
                    except ValueError as exc:
                        raise PluginLoadError(f"task {task_name}: {exc}") from None
                if task_name in found and found[task_name] is not value:
                    raise PluginLoadError(f"two tasks are named {task_name}: task function names must be unique")
                found[task_name] = value
    return dict(sorted(found.items()))


def _hook(module: ModuleType, name: str) -> Callable[..., Any] | None:
    hook = getattr(module, name, None)
    if hook is not None and not callable(hook):
        raise PluginLoadError(f"{module.__name__.split('.', 1)[-1]}.py: `{name}` must be a function")
    return hook


async def run_hook(plugin: LoadedPlugin, spec: Callable[..., Any] | str) -> None:
    """run_hook calls the plugin's hook `spec` (a hook of the contract, `contract.on_load` or `contract.on_unload`,
    or its name) with its context, a sync one in a worker thread; raises PluginLoadError on a failure or past
    HOOK_TIMEOUT, and ValueError for a name that is not one of those hooks (`health` is run by
    `xcore.plugins.health.check`, which judges its answer)."""
    name = spec if isinstance(spec, str) else spec.__name__
    if name not in LIFECYCLE:
        run = ", ".join(LIFECYCLE)
        raise ValueError(f"{name!r} is not a hook of the plugin contract run at a load or an unload ({run})")
    hook = plugin.on_load if name == contract.on_load.__name__ else plugin.on_unload
    if hook is None:
        return

    async def call() -> None:
        if inspect.iscoroutinefunction(hook):
            await hook(plugin.context)
        else:  # a hook stuck past the time limit leaves its thread behind, but not the host
            result = await anyio.to_thread.run_sync(hook, plugin.context, abandon_on_cancel=True)
            if inspect.isawaitable(result):
                await result

    try:
        with anyio.fail_after(HOOK_TIMEOUT):
            await call()
    except TimeoutError:
        raise PluginLoadError(f"{name} did not finish within {HOOK_TIMEOUT:.0f} s") from None
    except Exception as exc:
        plugin.context.logger.error("%s failed", name, exc_info=exc, extra={"context": "plugins"})
        raise PluginLoadError(f"{name} raised {_located(exc, plugin.folder)}") from None
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:  # never let a plugin stop the host
        raise PluginLoadError(f"{name} raised {type(exc).__name__}") from None


def unload_modules(package: str) -> None:
    """unload_modules forgets every module of one load, so a retired version can be freed."""
    for name in [n for n in list(sys.modules) if n == package or n.startswith(package + ".")]:
        sys.modules.pop(name, None)  # list(): another thread may import while this runs


def _import_failure(exc: BaseException, folder: Path) -> str:
    if isinstance(exc, SyntaxError):
        where = _relative(exc.filename, folder)
        return f"SyntaxError in {where}, line {exc.lineno}: {exc.msg}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("xcore_plugin_"):
        text = (
            f"cannot import {exc.name!r}: it is not part of the bundle or of this xcore ({_located(exc, folder)}); "
            "a package the bundle needs goes in plugin.json's requirements, and `xcore plugin pack --wheels` packs it"
        )
        if frozen():  # a binary holds a fixed set of modules; from source the author can install what is missing
            text += "; `xcore plugin runtime` lists what this binary contains"
        return text
    return f"importing the plugin raised {_located(exc, folder)}"


def _located(exc: BaseException, folder: Path) -> str:
    """_located is `Type: message (file, line N)`, at the deepest frame inside the plugin's folder."""
    text = f"{type(exc).__name__}: {_one_line(exc)}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _inside(f.filename, folder)]
    if frames:
        text += f" ({_relative(frames[-1].filename, folder)}, line {frames[-1].lineno})"
    return text


def _inside(filename: str | None, folder: Path) -> bool:
    return bool(filename) and Path(filename or "").resolve().is_relative_to(folder.resolve())


def _relative(filename: str | None, folder: Path) -> str:
    if not filename:
        return "?"
    path = Path(filename)
    return str(path.resolve().relative_to(folder.resolve())) if _inside(filename, folder) else path.name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
