"""xcore.testing: a pytest plugin for plugin authors. Installed with xcore; pytest finds it on its own.

The `plugin_client` fixture loads one plugin, from its folder or its zip, into a real xcore app on a temporary
data directory, exactly as a server would (checks, import, `on_load`, permissions, access rules), and returns
a test client logged in as a user of your choice::

    def test_hello(plugin_client):
        client = plugin_client(Path(__file__).parent.parent)
        assert client.get("/app/hello/").status_code == 200

`plugin_client(source, config=None, roles=("superadmin",), permissions=(), login=True, sandbox=False)`:

- `config` sets admin overrides of the plugin's settings (checked against its defaults, as the admin API does);
- `roles` and `permissions` make the user the client acts as; `login=False` gives an anonymous client;
- `sandbox=True` runs the plugin in a sandbox worker whatever its plugin.json says (the host's
  `manager.plugins.sandbox = "require"`), as a host that requires it would; a plugin whose plugin.json says
  `"sandbox": true` runs sandboxed either way;
- `client.plugin` is what the admin API shows about the plugin (state, version, routes, tasks, config), and
  `client.runtime` the host's Runtime;
- the plugin's tasks run for real: `fn.enqueue(...)` queues them on a consumer in the test process, and each
  run is journalled in the host's `task_runs` table;
- passwords are hashed with argon2's cheapest parameters while the fixture is in use, not the production ones
  (`xcore.auth.hashing.cheap_hashing`), so a login costs next to nothing.

Setting up fails the test with the plugin's own error when it does not load.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

PASSWORD_LENGTH = 24


@pytest.fixture
def plugin_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., TestClient[Any]]]:
    """plugin_client(source, config=None, roles=("superadmin",), permissions=(), login=True, sandbox=False) ->
    TestClient."""
    from xcore.auth.hashing import cheap_hashing

    with ExitStack() as stack:
        stack.enter_context(cheap_hashing())

        def make(
            source: str | Path,
            *,
            config: Mapping[str, Any] | None = None,
            roles: Iterable[str] = ("superadmin",),
            permissions: Iterable[str] = (),
            login: bool = True,
            sandbox: bool = False,
        ) -> TestClient[Any]:
            data = tmp_path_factory.mktemp("xcore-data")
            return _start(stack, data, Path(source), config, roles, permissions, login, sandbox)

        yield make


def _start(
    stack: ExitStack,
    data: Path,
    source: Path,
    config: Mapping[str, Any] | None,
    roles: Iterable[str],
    permissions: Iterable[str],
    login: bool,
    sandbox: bool = False,
) -> TestClient[Any]:
    from xcore.plugins.bundle import inspect_bundle
    from xcore.plugins.manager import PluginManager
    from xcore.plugins.settings import override_problems, replace_overrides
    from xcore.plugins.sources import Problem, read_dev_folder
    from xcore.plugins.store import install_bundle
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database
    from xcore.tasks.host import TaskHost
    from xcore.web.plugin_apps import plugin_switch

    environ = {"XCORE_MANAGER__PLUGINS__SANDBOX": "require"} if sandbox else {}
    runtime = open_runtime(data, environ=environ, logs=False)
    stack.callback(runtime.close)
    prepare_database(runtime)
    if source.is_dir():
        found = read_dev_folder(source.resolve(), runtime.config.manager.plugins.entry_point)
        if isinstance(found, Problem):
            raise pytest.fail.Exception(f"{source}: {found.error}", pytrace=False)
        plugin_id, dev = found.manifest.id, [source]
    else:
        entry = runtime.config.manager.plugins.entry_point
        plugin_id, dev = inspect_bundle(source, runtime.version, default_entry=entry).manifest.id, []
        install_bundle(runtime, source)
    if config:
        with runtime.auth.transaction() as session:
            replace_overrides(session, plugin_id, config, "test")
    manager = PluginManager(runtime, dev, tasks=TaskHost(runtime))
    client: TestClient[Any] = stack.enter_context(TestClient(plugin_switch(runtime, manager)))
    view = manager.views.get(plugin_id)
    if view is None or view.state != "active":
        raise pytest.fail.Exception(f"plugin {plugin_id} did not load: {view.error if view else 'not found'}", False)
    if config:
        problems = override_problems(manager.loaded[plugin_id].defaults, config)
        if problems:
            raise pytest.fail.Exception(f"config: {'; '.join(f'{k}: {v}' for k, v in problems)}", pytrace=False)
    client.plugin = view  # type: ignore[attr-defined]
    client.runtime = runtime  # type: ignore[attr-defined]
    token = _login(client, runtime, list(roles), list(permissions))
    if login:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def _login(client: TestClient[Any], runtime: Any, roles: list[str], permissions: list[str]) -> str:
    """_login creates the host's owner (so the host is set up), then, unless the user is the owner, the user with
    `roles`, and logs in as that user."""
    from xcore.auth import accounts
    from xcore.auth.login import find_user
    from xcore.auth.principals import principal_of
    from xcore.auth.roles import create_role
    from xcore.auth.service import Client

    here = Client(ip="127.0.0.1")
    password = secrets.token_urlsafe(PASSWORD_LENGTH)
    owner = accounts.complete_setup(runtime.auth, here, None, username="owner", password=password)
    username = "owner"
    if roles != ["superadmin"] or permissions:
        with runtime.sessions() as session:
            found = find_user(session, owner.username)
            assert found is not None
            root = principal_of(found)
        if permissions:
            create_role(runtime.auth, root, here, name="plugin-test", permissions=permissions)
            roles = [*roles, "plugin-test"]
        username = "tester"
        accounts.create_user(runtime.auth, root, here, username=username, password=password, roles=roles)
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    if response.status_code != 200:
        raise pytest.fail.Exception(f"plugin_client: login failed: {response.text}", pytrace=False)
    token: str = response.json()["access_token"]
    return token
