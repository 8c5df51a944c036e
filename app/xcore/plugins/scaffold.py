"""Scaffolding: `xcore plugin new NAME` writes a small, working, tested plugin folder to start from.

The templates are string constants here rather than files, so they ship in every build (wheel, PyInstaller)
without package-data settings. `{id}` and `{title}` are filled in with `str.format`; literal
braces in the templates are doubled. The page's module and icon are copied as they are: the module reads what it
needs (its plugin's prefix, its title) from the `ctx` the app gives it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xcore import __version__
from xcore.build import python_command, self_command, shell_line
from xcore.errors import XcoreError
from xcore.plugins.contract import CONFIG_FILES, DEFAULT_ENTRY, MANIFEST_FILE, PLUGIN_ID, STATIC_FOLDER
from xcore.plugins.manifest import RESERVED_IDS


class ScaffoldError(XcoreError):
    """ScaffoldError is a plugin name that is not a valid id, or a target folder that is already in use."""

    exit_code = 2


RUN_PY = '''\
"""{title}: an xcore plugin. GET /app/{id}/hello answers with the greeting set in config.yaml; the plugin's page
(static/{id}.js, at /admin/apps/{id}/{page} in the app) shows that answer."""

from xcore.sdk import Ctx, PluginContext, Router, get, task


@get("/hello", sync_to_thread=False)
def hello(ctx: Ctx) -> dict[str, str]:
    """hello answers with the configured greeting; an admin can change it without a new version."""
    return {{"message": ctx.config["greeting"] + ", from {id}!"}}


@task()
def shout(text: str) -> str:
    """shout is a one-off task, registered as {id}.shout; queue it with shout.enqueue("hi")."""
    return text.upper()


def on_load(ctx: PluginContext) -> None:
    """on_load runs each time this version goes live: create tables or check settings here."""
    ctx.logger.info("%s %s loaded; the greeting is %r", ctx.id, ctx.version, ctx.config.get("greeting"))


router = Router("/", route_handlers=[hello])
'''

CONFIG_YAML = """\
# Default settings of {id}; the handlers read them as ctx.config. Admins can override each key.
greeting: Hello
"""

TEST_PY = '''\
"""Tests of {id}, on a real xcore app with a temporary data directory (the plugin_client fixture of xcore.testing)."""

from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent


def test_hello_answers_with_the_configured_greeting(plugin_client):
    client = plugin_client(PLUGIN)
    response = client.get("/app/{id}/hello")
    assert response.status_code == 200, response.text
    assert response.json() == {{"message": "Hello, from {id}!"}}


def test_an_admin_can_change_the_greeting(plugin_client):
    client = plugin_client(PLUGIN, config={{"greeting": "Bonjour"}})
    assert client.get("/app/{id}/hello").json() == {{"message": "Bonjour, from {id}!"}}


def test_anonymous_visitors_must_log_in(plugin_client):
    client = plugin_client(PLUGIN, login=False)
    assert client.get("/app/{id}/hello").status_code == 401
'''

PAGE_JS = """\
// The plugin's page, at /admin/apps/<plugin id>/<page path> in xcore's app: the app imports this module and calls
// render(ctx). ctx.main is the page's area, ctx.plugin.prefix the address of the plugin's routes, ctx.page.title
// its title in plugin.json, and ctx.xcore the page SDK: api (get, post, put, patch, delete: the user's session is
// handled), user(), can(permission), navigate(path), notice(message), and h/text/clear to build the page.
//
// It runs under the app's Content-Security-Policy (script-src 'self'): no inline script, no eval, no onclick="..."
// strings. Build nodes with h(), which sets text, never HTML. The whole contract is in xcore's plugins/README.md
// ("Pages").

export function render({ main, plugin, page, xcore }) {
  const { api, h, notice } = xcore;
  const answer = h("p", { class: "lead" }, "Asking the server…");
  const again = h("button", { type: "button", onclick: ask }, "Ask again");
  main.append(h("h1", {}, page.title), h("p", {}, `GET ${plugin.prefix}/hello answers:`), answer, again);
  ask();

  async function ask() {
    try {
      const { message } = await api.get(`${plugin.prefix}/hello`);
      answer.textContent = message;
    } catch (err) {
      answer.textContent = `Error: ${err.message}`;
      notice(`The server did not answer: ${err.message}`, { kind: "error" });
    }
  }
}
"""

PAGE_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" height="24" fill="none" stroke="#4a5568"
  stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">
  <path d="M4 5h16v11H9l-5 4z"/>
  <path d="M8 9.5h8M8 12.5h5"/>
</svg>
"""

TEST_PAGE_PY = '''\
"""The page of {id}, in a real browser.

xcore serves this folder on a free port and headless Chromium opens the page, logged in (the plugin_page fixture
of xcore.testing). It needs Playwright and a Chromium: see README.md. A script error, a console error or a
Content-Security-Policy violation in the page fails the test.
"""

from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent


def test_the_page_shows_the_greeting_of_the_server(plugin_page):
    # Imported here, not at the top: without Playwright, plugin_page fails this test saying how to install it,
    # and the other tests of the folder still run.
    from playwright.sync_api import expect

    page = plugin_page(PLUGIN)  # a plain user, at the first page of plugin.json
    expect(page.get_by_role("heading", level=1)).to_have_text("{title}")
    expect(page.get_by_text("Hello, from {id}!")).to_be_visible()
    page.get_by_role("button", name="Ask again").click()
    expect(page.get_by_text("Hello, from {id}!")).to_be_visible()
'''

# The plugin's own pytest settings: they keep pytest from taking those of a folder above (an xcore checkout), and
# set the loop scope pytest-asyncio (one of xcore's test tools) warns about when it is unset.
PYTEST_INI = """\
[pytest]
testpaths = tests
asyncio_default_fixture_loop_scope = function
"""

README_MD = """\
# {title}

An xcore plugin. Its routes live under `/app/{id}/`; `GET /app/{id}/hello` answers with the greeting set in
`config.yaml`. Its page, `/admin/apps/{id}/{page}` in the app (listed on every user's home page), shows that
answer.

| file | what it is |
|---|---|
| `plugin.json` | the manifest: id, version, the xcore versions it needs (`requires`) and its `pages` |
| `run.py` | the entry module: `router`, tasks, `on_load` |
| `config.yaml` | default settings, read through `ctx.config` |
| `static/{id}.js` | the page: an ES module whose `render(ctx)` fills it, with the page SDK (`ctx.xcore`) |
| `static/{id}.svg` | the page's icon |
| `tests/test_plugin.py` | tests of the routes on a real xcore app, with the `plugin_client` fixture |
| `tests/test_page.py` | a test of the page in a real browser, with the `plugin_page` fixture |
| `pytest.ini` | pytest's settings for these tests |

## Work on it

`xcore` below is your xcore command: `xcore` when it is on your PATH, `python3 tasks.py run` in an xcore
checkout (`python3 tasks.py run plugin pack PATH`), or the path `xcore plugin new` printed.

- Test: `python -m pytest` in this folder, with the Python that xcore is installed in (in an xcore checkout:
  `.venv/bin/python -m pytest`, the command `xcore plugin new` printed). It provides the `plugin_client` and
  `plugin_page` fixtures; the tools come with `python3 tasks.py test`, or `pip install pytest pytest-asyncio`.
- Test the page: `tests/test_page.py` starts `xcore serve` with this folder and opens the page in headless
  Chromium, as a plain user (`plugin_page(PLUGIN, roles=..., permissions=...)` for another). It needs
  Playwright: `pip install playwright` with that same Python, then a Chromium, Debian's (`apt install
  chromium`) or Playwright's own (`python -m playwright install chromium`); without them the test fails saying
  so. `python -m pytest tests/test_page.py` runs it alone. A script error, a console error or a
  Content-Security-Policy violation in the page fails it: no inline script, no eval, no `onclick="..."`.
- Run it live: `xcore serve --plugins-dev ..` (from this folder) loads every plugin folder beside this one,
  and reloads this one when a file changes.
- Pack it: `xcore plugin pack .` writes `{id}-<version>.zip` (add `--out DIR` to put it elsewhere). Raise
  `version` in `plugin.json` for each release.
- Install it: `xcore plugin install {id}-<version>.zip` (or a git URL); `xcore plugin list` shows what is
  installed, `xcore plugin remove {id}` takes it out again.

The whole contract (every `plugin.json` key and every name in `xcore.sdk`) is documented in xcore's
`plugins/README.md`. Import between modules of this plugin with relative imports (`from . import models`):
the host imports the bundle as a package under a unique name.
"""


def next_steps(folder: Path) -> list[str]:
    """next_steps are the lines `xcore plugin new` prints after creating `folder`: commands that work as printed,
    in any shell, whether or not xcore's environment is active (this Python and this xcore, by absolute path).
    """
    go = shell_line(["cd", str(folder.absolute())])
    pack = f"{shell_line([*self_command(), 'plugin', 'pack', '.'])}  (see its README.md)"
    python = python_command()
    if python is None:  # a frozen build has no Python, hence no pytest, to run the tests with
        return [
            f"next: {go} && {pack}",
            "tests: run `python -m pytest` in the folder with a Python that has xcore and pytest installed",
        ]
    return [f"next: {go} && {shell_line([*python, '-m', 'pytest'])}", f"then: {pack}"]


def create_scaffold(parent: Path, name: str) -> Path:
    """create_scaffold writes a new plugin `name` into `<parent>/<name>/` and returns that folder.

    Raises ScaffoldError when `name` is not a valid plugin id, or the folder exists and is not empty.
    """
    if not re.match(PLUGIN_ID, name):
        raise ScaffoldError(
            f"plugin name {name!r}: an id is 2 to 40 characters, lowercase letters, digits and _, "
            "starting with a letter (for example my_notes)"
        )
    if name in RESERVED_IDS:
        raise ScaffoldError(f"plugin name {name!r} is reserved ({RESERVED_IDS[name]}); choose another name")
    folder = parent / name
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScaffoldError(f"{folder} already exists and is not empty; choose another name or --dir")
    for relative, text in _files(name).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _files(plugin_id: str) -> dict[str, str]:
    """_files maps each file of the scaffold to its content."""
    title = plugin_id.replace("_", " ").capitalize()
    page = plugin_id.replace("_", "-")  # a page's path takes dashes, not underscores (contract.PAGE_PATH)
    fields = {"id": plugin_id, "title": title, "page": page}
    module, icon = f"{STATIC_FOLDER}/{plugin_id}.js", f"{STATIC_FOLDER}/{plugin_id}.svg"
    manifest = {
        "id": plugin_id,
        "version": "0.1.0",
        "name": title,
        "description": f"{title}: says hello (a starting point made by `xcore plugin new`).",
        "requires": _requires(),
        "pages": [{"path": page, "title": title, "module": module, "icon": icon}],
    }
    return {
        MANIFEST_FILE: json.dumps(manifest, indent=2) + "\n",
        f"{DEFAULT_ENTRY}.py": RUN_PY.format(**fields),
        CONFIG_FILES[0]: CONFIG_YAML.format(**fields),
        module: PAGE_JS,
        icon: PAGE_SVG,
        "tests/test_plugin.py": TEST_PY.format(**fields),
        "tests/test_page.py": TEST_PAGE_PY.format(**fields),
        "pytest.ini": PYTEST_INI,
        "README.md": README_MD.format(**fields),
    }


def _requires() -> str:
    """_requires is `>=<major>.<minor>` of this xcore: the plugin may use everything this version offers."""
    major, minor = __version__.split(".")[:2]
    return f">={major}.{minor}"
