"""with_context: how a task's function gets its plugin's context, wherever its `ctx` parameter stands.

A module of its own, without the journal's database, so a sandboxed plugin's worker (`xcore.plugin_worker`),
which runs tasks but keeps no journal, imports it without SQLAlchemy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from xcore.sdk import PluginContext


def with_context(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], context: PluginContext
) -> tuple[list[Any], dict[str, Any]]:
    """with_context passes `context` as the function's `ctx` parameter, if it has one, wherever it stands: the
    caller's arguments (`fn.enqueue(*args)`) go to the other parameters. Raises TypeError when they do not fit."""
    signature = inspect.signature(fn)
    if "ctx" not in signature.parameters:
        return args, kwargs
    others = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "ctx"])
    arguments = {**others.bind(*args, **kwargs).arguments, "ctx": context}
    ordered = {name: arguments[name] for name in signature.parameters if name in arguments}
    bound = inspect.BoundArguments(signature, ordered)
    return list(bound.args), dict(bound.kwargs)
