"""The modules whose annotations libraries read while a worker starts keep them evaluated.

Litestar reads every route handler's signature when it builds an app, msgspec every field of a settings or
manifest struct the first time it converts one, SQLAlchemy every `Mapped[...]` as it maps a model. With
`from __future__ import annotations` each of those annotations is a string that `typing.get_type_hints` has to
`eval` (about 100 µs for a handler's, a fifth of that when they are evaluated already). Without the future
import in these modules, a source start (`xcore serve`, no plugins) reached its first 200 on /health 23 and
27 ms sooner at the median of 20 and 30 alternating paired starts. This test keeps it that way.
"""

from __future__ import annotations
import __future__

import importlib
import inspect
from typing import Any

import msgspec
import pytest
from litestar.handlers import BaseRouteHandler

from xcore.db.models import Base

HANDLER_MODULES = [
    "xcore.web.admin_routes", "xcore.web.auth_routes", "xcore.web.backup_routes", "xcore.web.docs_routes",
    "xcore.web.log_routes", "xcore.web.me_routes", "xcore.web.plugin_routes", "xcore.web.core_routes",
    "xcore.web.task_routes", "xcore.web.ui_routes", "xcore.web.user_routes",
]  # fmt: skip
STRUCT_MODULES = ["xcore.config.schema", "xcore.web.schemas", "xcore.plugins.manifest"]


def postponed(annotations: dict[str, Any]) -> list[str]:
    return [name for name, value in annotations.items() if isinstance(value, str)]


def test_every_core_route_handler_has_evaluated_annotations() -> None:
    handlers = [
        value
        for module in HANDLER_MODULES
        for value in vars(importlib.import_module(module)).values()
        if isinstance(value, BaseRouteHandler)
    ]
    assert len(handlers) > 40
    found = {f"{h.fn.__module__}.{h.fn.__qualname__}": postponed(h.fn.__annotations__) for h in handlers}
    assert {name: names for name, names in found.items() if names} == {}


@pytest.mark.parametrize("module", HANDLER_MODULES + STRUCT_MODULES + ["xcore.db.models"])
def test_the_module_does_not_postpone_its_annotations(module: str) -> None:
    loaded = importlib.import_module(module)
    assert vars(loaded).get("annotations") is not __future__.annotations, (
        f"{module} imports annotations from __future__; see this test's docstring"
    )


@pytest.mark.parametrize("module", STRUCT_MODULES)
def test_the_structs_msgspec_converts_have_evaluated_fields(module: str) -> None:
    loaded = importlib.import_module(module)
    structs = [
        value
        for value in vars(loaded).values()
        if inspect.isclass(value) and issubclass(value, msgspec.Struct) and value.__module__ == module
    ]
    assert structs
    assert {s.__name__: postponed(s.__annotations__) for s in structs if postponed(s.__annotations__)} == {}


def test_the_core_models_have_evaluated_mapped_annotations() -> None:
    models = [mapper.class_ for mapper in Base.registry.mappers]
    assert len(models) >= 10
    assert {m.__name__: postponed(m.__annotations__) for m in models if postponed(m.__annotations__)} == {}
