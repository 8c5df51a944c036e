"""direct: how the request path calls the ASGI layers it holds (the Switch, the Dispatch, the access guard).

Calling an instance of a Python class, as in `app(scope, receive, send)`, makes CPython look `__call__` up on the
class and pack the three arguments into a tuple, on every call; calling the bound method does neither. Each
layer of the request path keeps what it calls next as `direct(app)`, which every request then passes the
cheaper way (benchmarks/README.md counts it).
"""

from __future__ import annotations

from types import FunctionType
from typing import Any


def direct(app: Any) -> Any:
    """direct returns `app`'s bound `__call__` when `app` is an instance of a class that defines `__call__` in
    Python; otherwise (a function, a bound method, a class, a C callable) `app` itself, which is already called
    directly."""
    method = next((klass.__dict__["__call__"] for klass in type(app).__mro__ if "__call__" in klass.__dict__), None)
    if isinstance(method, FunctionType):
        return method.__get__(app, type(app))
    return app
