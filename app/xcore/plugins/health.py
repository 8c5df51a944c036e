"""Plugin health: what a serving version's `health(ctx)` says, judged the same way in process and in a sandbox.

The plugin contract (`xcore.plugins.contract.health`) says what a bundle may answer. The manager calls `check` for
each serving version every HEALTH_EVERY seconds and right after it loads, off the request path, and keeps the
result on the version (`LoadedPlugin.last_health`); the views show it (`PluginView.health`), `/health` counts it,
and the metrics read `view.health.status`. A failing plugin is flagged, never unloaded. A sandboxed version's
check runs in its worker (`plugin_worker.Worker.health`, through `check` there too) and comes back as a
`PluginHealth`'s status and detail.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from xcore.plugins.contract import HEALTH_DETAIL, HEALTH_TIMEOUT
from xcore.plugins.loader import LoadedPlugin

OK, FAILING, UNKNOWN = "ok", "failing", "unknown"
STATUSES = (OK, FAILING, UNKNOWN)
NOT_DECLARED = "it defines no health()"
NOT_CHECKED = "not checked yet"


@dataclass(frozen=True)
class PluginHealth:
    """PluginHealth is one plugin's last health check: `status` (ok, failing or unknown: not serving, not checked
    yet, or no health() defined), a short `detail` (one line, at most HEALTH_DETAIL characters) and when it was
    checked (`checked_at`, ISO 8601 in UTC; None when never)."""

    status: str = UNKNOWN
    detail: str | None = None
    checked_at: str | None = None
    duration_ms: float | None = None  # how long the check took


def short(text: str) -> str:
    """short is `text` on one line, cut to HEALTH_DETAIL characters (the last one an ellipsis when cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= HEALTH_DETAIL else line[: HEALTH_DETAIL - 1] + "…"


def judge(answer: Any) -> tuple[str, str | None]:
    """judge is the status and detail of what a health() returned: True or None ok; False failing; a str ok with
    it as the detail; a dict by its `ok` (a bool it must have), its detail its `detail` or else its other keys as
    JSON; anything else failing, saying what it was."""
    if answer is None or answer is True:
        return OK, None
    if answer is False:
        return FAILING, "health() returned False"
    if isinstance(answer, str):
        return OK, short(answer) or None
    if isinstance(answer, dict):
        ok = answer.get("ok")
        if not isinstance(ok, bool):
            return FAILING, "health() returned a dict without a true or false `ok`"
        rest = {str(k): v for k, v in answer.items() if k != "ok"}
        if "detail" in rest:
            detail: str | None = str(rest["detail"])
        else:
            detail = json.dumps(rest, default=str, sort_keys=True, ensure_ascii=False) if rest else None
        return (OK if ok else FAILING), (short(detail) if detail else None)
    return FAILING, short(f"health() returned {type(answer).__name__}, not True, False, a str or a dict")


def now_text() -> str:
    """now_text is the time now as `checked_at` shows it: ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


async def run_health(fn: Any, ctx: Any, timeout: float | None = None) -> tuple[str, str | None]:
    """run_health calls `fn(ctx)` (sync in a worker thread, or async) within `timeout` seconds (HEALTH_TIMEOUT
    when None) and judges what it returned; an exception or a run past the time is failing, with the reason. A
    sync health() stuck past its time keeps its thread; `check` does not start another one meanwhile."""
    timeout = HEALTH_TIMEOUT if timeout is None else timeout
    try:
        with anyio.fail_after(timeout):
            if inspect.iscoroutinefunction(fn):
                answer = await fn(ctx)
            else:
                answer = await anyio.to_thread.run_sync(fn, ctx, abandon_on_cancel=True)
                if inspect.isawaitable(answer):
                    answer = await answer
    except TimeoutError:
        return FAILING, f"health() did not answer within {timeout:g} s"
    except Exception as exc:
        return FAILING, short(f"health() raised {type(exc).__name__}: {exc}")
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:  # a plugin never stops the host
        return FAILING, f"health() raised {type(exc).__name__}"
    return judge(answer)


async def check(plugin: LoadedPlugin) -> PluginHealth:
    """check runs the serving version's health check (in its sandbox worker when it runs sandboxed) and returns
    what it says; `unknown` when the version defines no health(). Never raises."""
    started = time.perf_counter()
    if plugin.sandbox is not None:
        if not getattr(plugin.sandbox, "has_health", False):
            return PluginHealth(UNKNOWN, NOT_DECLARED)
        status, detail = await plugin.sandbox.health()
    elif plugin.health is None:
        return PluginHealth(UNKNOWN, NOT_DECLARED)
    elif plugin.health_running:
        status, detail = FAILING, "its previous health check has not finished yet"
    else:
        plugin.health_running = True
        try:
            status, detail = await run_health(_finishing(plugin), plugin.context)
        finally:
            if inspect.iscoroutinefunction(plugin.health):
                plugin.health_running = False
    took = round((time.perf_counter() - started) * 1000, 2)
    return PluginHealth(status, detail, now_text(), took)


def _finishing(plugin: LoadedPlugin) -> Any:
    """_finishing is the plugin's health(), which marks the check done when it returns: for a sync one, only
    when its thread really ends (a timed-out one goes on), so that a stuck health() holds one thread at most."""
    fn = plugin.health
    if inspect.iscoroutinefunction(fn):
        return fn

    def run(ctx: Any) -> Any:
        try:
            return fn(ctx)  # type: ignore[misc]
        finally:
            plugin.health_running = False

    return run
