// One plugin: what it is (version, state, error, bundle), the packages it requires and what meets them, its routes
// (each linked to its operation in /docs, GET routes callable from the page), its tasks and permissions, and its
// settings: the overrides as JSON, checked here for syntax and by the server for keys and types, then saved. Near the
// top, the catalogues' notices on the version it runs; under About, who signed its bundle and whether this host
// trusts them.
import * as api from "../api.js";
import { badge, button, confirmDialog, errorBox, errorMessage, field, h, link, section, table, toast } from "../dom.js";
import {
  TRUST_PAGE, actionButtons, busy, healthFlag, mayChange, noticeList, outcome, pluginApi, pluginLabel, readOnlyNote,
  runAction, signatureText,
} from "./plugins.js";
import { cronText, everyText } from "./tasks.js";

export const title = "Plugin";

const ANSWER_MAX = 20000; // characters of a tried route's answer shown in the page

/**
 * findJsonError checks JSON text strictly and returns the first mistake as {offset, line, column, message}, or
 * null when the text is valid. (Browsers word JSON.parse errors differently, and some give no position.)
 */
export function findJsonError(text) {
  let i = 0;
  const fail = (message) => {
    throw new SyntaxError(message);
  };
  const found = () => (i >= text.length ? "the end of the text" : `“${text[i]}”`);
  const space = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i += 1;
  };
  const string = () => {
    i += 1;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\") {
        const next = text[i + 1];
        if (next === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else if (next !== undefined && '"\\/bfnrt'.includes(next)) i += 2;
        else fail("a backslash in a string must start an escape such as \\n, \\\" or \\u00e9");
      } else if (text.charCodeAt(i) < 0x20) {
        fail("a line break or tab inside a string must be written \\n or \\t");
      } else {
        i += 1;
      }
    }
    if (i >= text.length) fail("a string is not closed: a \" is missing");
    i += 1;
  };
  const number = () => {
    const pattern = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    pattern.lastIndex = i;
    const match = pattern.exec(text);
    if (!match || !match[0] || match[0] === "-") fail(`expected a number, found ${found()}`);
    i += match[0].length;
  };
  const items = (close, item) => {
    i += 1;
    space();
    if (text[i] === close) {
      i += 1;
      return;
    }
    for (;;) {
      item();
      space();
      if (text[i] === ",") {
        i += 1;
        space();
        if (text[i] === close) fail(`a comma before “${close}”: remove it (JSON allows no trailing comma)`);
        continue;
      }
      if (text[i] === close) {
        i += 1;
        return;
      }
      const starts = i < text.length && '"{[-0123456789tfn'.includes(text[i]);
      fail(`expected “,” or “${close}”, found ${found()}${starts ? " (a comma is missing?)" : ""}`);
    }
  };
  const value = () => {
    space();
    const c = text[i];
    if (c === "{") {
      items("}", () => {
        space();
        if (text[i] !== '"') fail(`expected a key in double quotes, found ${found()}`);
        string();
        space();
        if (text[i] !== ":") fail(`expected “:” after the key, found ${found()}`);
        i += 1;
        value();
      });
    } else if (c === "[") {
      items("]", value);
    } else if (c === '"') {
      string();
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      number();
    } else {
      const word = ["true", "false", "null"].find((w) => text.startsWith(w, i));
      if (!word) fail(`expected a value, found ${found()}${c === "'" ? " (JSON strings use double quotes)" : ""}`);
      i += word.length;
    }
  };
  try {
    value();
    space();
    if (i < text.length) fail(`unexpected ${found()} after the end of the JSON value`);
    return null;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const before = text.slice(0, i);
    const line = before.split("\n").length;
    const column = i - (before.lastIndexOf("\n") + 1) + 1;
    return { offset: i, line, column, message: err.message };
  }
}

/** parseRoute splits "GET /app/notes/{note_id:int}" into method, path, the OpenAPI path and whether it has parameters. */
export function parseRoute(route) {
  const [method, ...rest] = route.split(" ");
  const path = rest.join(" ");
  const openapiPath = path.replace(/\{([^}:]+):[^}]*\}/g, "{$1}");
  return { method, path, openapiPath, hasParams: path.includes("{") };
}

/** swaggerHash is Swagger UI's deep-link fragment for a tag, or for one operation under it. */
export function swaggerHash(tag, operationId) {
  const part = (text) => encodeURIComponent(String(text).trim());
  return operationId ? `#/${part(tag)}/${part(operationId)}` : `#/${part(tag)}`;
}

/**
 * docsOperations finds each route's tag and operationId in the merged OpenAPI document; when that cannot be
 * read, it falls back to the host's naming (tag = plugin id, operationId = method + path words).
 */
async function docsOperations(view, routes) {
  const doc = await api.get("/openapi.json").catch(() => null);
  return routes.map((route) => {
    const op = doc?.paths?.[route.openapiPath]?.[route.method.toLowerCase()];
    if (op) return { tag: op.tags?.[0] || view.id, operationId: op.operationId };
    const words = route.openapiPath.split("/").map((w) => w.replace(/[{}]/g, "").replace(/[^A-Za-z0-9]+/g, "_"));
    return { tag: view.id, operationId: [route.method.toLowerCase(), ...words.filter(Boolean)].join("_"), guessed: true };
  });
}

/** tryRoute calls a route with the session and resolves to {status, statusText, type, body}. */
async function tryRoute(path) {
  const call = () => fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let response = await call();
  // An expired access token: refresh the session once, as api.js does, then call again.
  if (response.status === 401 && (await api.refreshSession())) response = await call();
  const type = response.headers.get("content-type") || "";
  let body = await response.text();
  if (type.includes("json")) {
    try {
      body = JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      // not JSON after all: shown as sent
    }
  }
  if (body.length > ANSWER_MAX) body = `${body.slice(0, ANSWER_MAX)}\n… (${body.length - ANSWER_MAX} more characters)`;
  return { status: response.status, statusText: response.statusText, type, body };
}

function facts(pairs) {
  return h(
    "dl",
    { class: "stats" },
    pairs.filter(Boolean).flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]),
  );
}

function scheduleText(task) {
  if (task.cron) return `${cronText(task.cron) || "cron"} (${task.cron})`;
  if (task.every) return everyText(task.every);
  return "on demand";
}

const pretty = (value) => JSON.stringify(value ?? {}, null, 2);

function signatureFacts(signature) {
  const kind = !signature ? "unsigned" : signature.trusted ? "trusted" : "untrusted";
  return h(
    "span",
    { class: `signature signature-${kind}` },
    signatureText(signature),
    kind === "untrusted" ? [" To trust its signer, add their key under ", link(TRUST_PAGE, "Trusted keys"), "."] : null,
  );
}

/** render shows one plugin's page; `params.id` is the plugin id. */
export async function render({ main, params, navigate, me }) {
  const id = params.id;
  let view;
  try {
    view = await api.get(pluginApi(id));
  } catch (err) {
    if (err.status !== 404) throw err;
    document.title = "Plugin not found · xcore";
    main.append(
      h("h1", {}, "Plugin not found"),
      h("p", { role: "alert" }, errorMessage(err)),
      h("p", {}, link("/admin/plugins", "Back to the plugins")),
    );
    return;
  }
  await draw(main, view, { navigate, manage: mayChange(me, view) });
}

async function draw(main, view, { navigate, manage, said = "", focusAction = null }) {
  const id = view.id;
  document.title = `${view.name || id} · Plugins · xcore`;
  const status = h("p", { class: "action-status", role: "status" }, said);
  const errors = errorBox();
  const perform = async (kind, el) => {
    errors.hide();
    status.textContent = "";
    let sentence;
    try {
      sentence = await busy(el, () => runAction(kind, view));
    } catch (err) {
      errors.show(`${el.textContent} ${id}: ${errorMessage(err)}`);
      return;
    }
    if (sentence === null) return; // the deletion was cancelled
    if (kind === "delete") {
      toast(sentence);
      navigate("/admin/plugins");
      return;
    }
    let fresh;
    try {
      fresh = await api.get(pluginApi(id));
    } catch (err) {
      errors.show(err);
      return;
    }
    main.replaceChildren();
    await draw(main, fresh, { navigate, manage, said: sentence, focusAction: kind });
  };

  main.replaceChildren(...[
    h("p", { class: "breadcrumb" }, link("/admin/plugins", "Plugins"), " / ", h("code", {}, id)),
    h("div", { class: "page-head" }, h("h1", {}, view.name || id), badge(view.state)),
    view.description ? h("p", { class: "lead" }, view.description) : null,
    noticeList(view.notices),
    manage ? h("div", { class: "row plugin-toolbar" }, actionButtons(view, perform)) : readOnlyNote(),
    errors,
    status,
  ].filter(Boolean));

  const versions = view.versions || [];
  main.append(section(
    "About",
    facts([
      ["ID", h("code", {}, id)],
      ["Version", view.failed_versions?.length ? `${view.version} (${view.summary})` : view.version],
      ["State", h("span", {}, badge(view.state), view.enabled ? "" : " (switched off by an admin)")],
      ["Error", view.error ? h("span", { class: "plugin-error" }, view.error) : "none"],
      ["Health", healthFacts(view)],
      view.author ? ["Author", view.author] : null,
      ["Source", view.source === "dev" ? "a --plugins-dev folder" : view.source === "zip" ? "a zip in the plugins folder" : view.source],
      ["File", view.file ? h("code", {}, view.file) : null],
      ["SHA-256", view.sha256 ? h("code", { class: "hash" }, view.sha256) : null],
      ["Signature", signatureFacts(view.signature)],
      ["Prefix", view.prefix ? h("code", {}, view.prefix) : null],
      ["Dependencies", Object.keys(view.dependencies || {}).length
        ? h("ul", { class: "bare-list" }, Object.entries(view.dependencies).map(([dep, spec]) =>
          h("li", {}, link(`/admin/plugins/${encodeURIComponent(dep)}`, dep), " ", h("code", {}, spec))))
        : "none"],
    ]),
    h("h3", {}, "Versions seen"),
    table({
      caption: `Versions of ${id} in the plugins folder`,
      empty: "No bundle of this plugin is in the plugins folder.",
      columns: [
        { label: "Version", render: (v) => v.version || "?" },
        { label: "File", render: (v) => h("code", {}, v.file) },
        { label: "State", render: (v) => badge(v.state) },
        { label: "Error", class: "error-cell", render: (v) => (v.error ? h("span", { class: "plugin-error" }, v.error) : null) },
      ],
      rows: versions,
    }),
  ));

  main.append(requirementsSection(view));
  main.append(await routesSection(view));
  main.append(tasksSection(view));
  main.append(section(
    "Permissions",
    view.permissions.length
      ? h("ul", { class: "bare-list" }, view.permissions.map((p) => h("li", {}, h("code", {}, p))))
      : h("p", { class: "muted" }, "This plugin defines no permissions."),
    view.permissions.length ? h("p", {}, "Grant them to roles on the ", link("/admin/roles", "Roles"), " page.") : null,
  ));
  main.append(await configSection(view, manage));

  if (focusAction) {
    // The buttons were drawn again: keep the keyboard on the same action (Disable becomes Enable).
    const again = main.querySelector(`.plugin-toolbar button[data-action="${focusAction}"]`);
    (again || main.querySelector(".plugin-toolbar button"))?.focus();
  }
}

async function routesSection(view) {
  const routes = view.routes.map(parseRoute);
  if (!routes.length) {
    return section(
      "Routes",
      h("p", { class: "muted" }, view.state === "active"
        ? "This plugin has no routes."
        : `No routes are mounted: the plugin is ${view.state}.`),
    );
  }
  const ops = await docsOperations(view, routes);
  const tag = ops.find((op) => !op.guessed)?.tag || view.id;
  const answer = h("div", { class: "try-answer", hidden: true });
  const tryError = errorBox();

  async function tryIt(route, el) {
    tryError.hide();
    try {
      const result = await busy(el, () => tryRoute(route.path));
      const ok = result.status >= 200 && result.status < 300;
      answer.replaceChildren(
        h("p", {}, h("code", {}, `${route.method} ${route.path}`), " answered ",
          h("strong", { class: ok ? "status-ok" : "status-bad" }, `${result.status} ${result.statusText}`.trim()),
          result.type ? h("span", { class: "muted" }, ` (${result.type})`) : null),
        h("pre", { class: "try-body", tabindex: "0", "aria-label": `Answer of ${route.method} ${route.path}` },
          result.body || "(empty)"),
      );
      answer.hidden = false;
    } catch (err) {
      tryError.show(`${route.method} ${route.path}: ${errorMessage(err)}`);
    }
  }

  return section(
    "Routes",
    h("p", {}, "Each route's entry in the API documentation: ",
      h("a", { href: `/docs${swaggerHash(tag)}`, class: "docs-tag" }, `all ${tag} routes in /docs`), "."),
    table({
      caption: `Routes of ${view.id}`,
      columns: [
        { label: "Method", render: ({ route }) => h("code", {}, route.method) },
        { label: "Path", class: "wrap", render: ({ route }) => h("code", {}, route.path) },
        {
          label: "Documentation",
          render: ({ route, op }) => h("a", {
            href: `/docs${swaggerHash(op.tag, op.operationId)}`,
            "aria-label": `${route.method} ${route.path} in /docs`,
            dataset: { operation: op.operationId },
          }, op.operationId),
        },
        {
          label: "Try",
          render: ({ route }) => (route.method === "GET" && !route.hasParams
            ? button("Try", {
              class: "small",
              "aria-label": `Try GET ${route.path}`,
              onclick: (event) => tryIt(route, event.currentTarget),
            })
            : h("span", { class: "muted" }, route.method === "GET" ? "needs parameters" : "—")),
        },
      ],
      rows: routes.map((route, i) => ({ route, op: ops[i] })),
    }),
    tryError,
    answer,
  );
}

/**
 * requirementsSection lists what meets each of plugin.json's requirements: the version installed (or "not met"),
 * where it comes from, the wheel that brings it and, for a wheel's own dependency, the package that needs it.
 */
function requirementsSection(view) {
  const requirements = view.requirements || [];
  if (!requirements.length) {
    return section("Requirements", h("p", { class: "muted" }, "This plugin requires no packages."));
  }
  const unmet = requirements.some((r) => !r.source);
  return section(
    "Requirements",
    h("p", { class: "muted" }, "The packages its plugin.json asks for (and those their wheels ask for), each met by ",
      "xcore (a package xcore itself runs with), the bundle (a wheel in its zip) or the index (a wheel downloaded ",
      "from the package index)."),
    table({
      caption: `Requirements of ${view.id}`,
      columns: [
        { label: "Requirement", class: "wrap", render: (r) => h("code", {}, r.requirement) },
        {
          label: "Installed",
          render: (r) => (r.source
            ? h("code", {}, r.version || "?")
            : h("strong", { class: "status-bad" }, "not met")),
        },
        { label: "From", render: (r) => r.source },
        { label: "Wheel", class: "wrap", render: (r) => (r.wheel ? h("code", {}, r.wheel) : null) },
        { label: "Needed by", render: (r) => r.needed_by || "plugin.json" },
      ],
      rows: requirements,
      rowProps: (r) => ({ dataset: { requirement: r.name } }),
    }),
    unmet
      ? h("p", {}, "A requirement that is not met keeps the plugin from loading: the error under About says why.")
      : null,
  );
}

function tasksSection(view) {
  return section(
    "Tasks",
    table({
      caption: `Tasks of ${view.id}`,
      empty: view.state === "active" ? "This plugin declares no tasks." : `No tasks are registered: the plugin is ${view.state}.`,
      columns: [
        { label: "Task", render: (t) => h("code", {}, t.name) },
        { label: "Kind", render: (t) => t.kind },
        { label: "Schedule", render: scheduleText },
        {
          label: "Runs",
          render: (t) => link(`/admin/tasks/runs?name=${encodeURIComponent(t.name)}`, "Run history", {
            "aria-label": `Run history of ${t.name}`,
          }),
        },
      ],
      rows: view.tasks,
    }),
    view.tasks.length ? h("p", {}, "Run, pause or resume them on the ", link("/admin/tasks", "Tasks"), " page.") : null,
  );
}

async function configSection(view, manage) {
  const id = view.id;
  const box = section("Settings");
  let config;
  try {
    config = await api.get(pluginApi(id, "/config"));
  } catch (err) {
    box.append(h("p", { role: "alert", class: "alert alert-error" }, `The settings cannot be read: ${errorMessage(err)}`));
    return box;
  }
  const keys = Object.keys(config.defaults);
  const defaults = h("pre", { class: "config-json", tabindex: "0", "aria-label": "Default settings" }, pretty(config.defaults));
  const effective = h("pre", { class: "config-json", tabindex: "0", "aria-label": "Effective settings" }, pretty(config.effective));
  if (!manage) {
    // Changing the settings reloads the plugin's code: the same permission as any other plugin change.
    box.append(
      h("div", { class: "config-grid" },
        h("div", {}, h("h3", {}, "Defaults (from the bundle)"), defaults),
        h("div", {}, h("h3", {}, "Effective (what the plugin sees)"), effective)),
      h("h3", {}, "Overrides"),
      h("pre", { class: "config-json", tabindex: "0", "aria-label": "Overrides" }, pretty(config.overrides)),
    );
    return box;
  }
  const text = h("textarea", { name: "overrides", rows: 8, spellcheck: "false", class: "config-input" });
  text.value = pretty(config.overrides);
  const editor = field("Overrides (JSON)", text, {
    hint: keys.length
      ? `A JSON object. Each key must be a setting of the defaults (${keys.join(", ")}) and keep its type; {} means none.`
      : "This plugin has no settings, so the only valid overrides are {}.",
  });
  const save = button("Save overrides", { type: "submit", class: "primary" });
  const restore = button("Restore defaults");
  const error = errorBox();
  const status = h("p", { class: "action-status", role: "status" });

  function showEffective(answer) {
    defaults.textContent = pretty(answer.defaults);
    effective.textContent = pretty(answer.effective);
    text.value = pretty(answer.overrides);
    config = answer;
  }

  async function store(overrides, sentence, el) {
    error.hide();
    editor.setError("");
    status.textContent = "";
    const other = el === save ? restore : save;
    other.disabled = true;
    await busy(el, () => send(overrides, sentence));
    other.disabled = false;
  }

  async function send(overrides, sentence) {
    try {
      const answer = await api.put(pluginApi(id, "/config"), { overrides });
      showEffective(answer);
      const after = await api.get(pluginApi(id)).catch(() => null);
      status.textContent = after && after.state !== "active" ? `${sentence} ${outcome(after)}` : sentence;
    } catch (err) {
      // Bad keys and types come back as errors[] with field "overrides.<key>": list them under the editor.
      const items = (err.problem?.errors || []).filter((e) => String(e.field || "").startsWith("overrides"));
      if (items.length) {
        editor.setError(items.map((e) => `${String(e.field).replace(/^overrides\.?/, "") || "overrides"}: ${e.message}`).join("\n"));
        text.focus();
      } else {
        error.show(err);
      }
    }
  }

  const form = h(
    "form",
    { class: "config-editor", novalidate: true },
    h("div", { class: "config-grid" },
      h("div", {}, h("h3", {}, "Defaults (from the bundle)"), defaults),
      h("div", {}, h("h3", {}, "Effective (what the plugin sees)"), effective)),
    editor,
    error,
    status,
    h("div", { class: "actions" }, restore, save),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const source = text.value.trim() ? text.value : "{}"; // an empty editor means no overrides
    const mistake = findJsonError(source);
    if (mistake) {
      editor.setError(`Not valid JSON at line ${mistake.line}, column ${mistake.column}: ${mistake.message}.`);
      status.textContent = "";
      text.focus();
      text.setSelectionRange(mistake.offset, Math.min(mistake.offset + 1, text.value.length));
      return;
    }
    const overrides = JSON.parse(source);
    if (overrides === null || typeof overrides !== "object" || Array.isArray(overrides)) {
      editor.setError('The overrides must be a JSON object, with one key per setting, like {"greeting": "Hi"}.');
      text.focus();
      return;
    }
    store(overrides, "Saved. The plugin now runs with the effective settings shown above.", save);
  });
  restore.addEventListener("click", async () => {
    const current = Object.keys(config.overrides);
    if (current.length) {
      const ok = await confirmDialog({
        title: `Restore the default settings of ${pluginLabel(view)}?`,
        body: `Its overrides (${current.join(", ")}) are removed and the plugin reloads with the defaults.`,
        confirmLabel: "Restore defaults",
      });
      if (!ok) return;
    }
    store({}, "Restored the defaults: the plugin has no overrides now.", restore);
  });
  box.append(
    h("p", { class: "muted" }, "The admin's overrides are merged over the bundle's defaults; saving reloads the plugin."),
    form,
  );
  return box;
}

/**
 * healthFacts says what the plugin's last health check found: "health failing: <detail>" (flagged), "ok" with its
 * detail, or why it is unknown (not serving, not checked yet, no health()); with when it was checked.
 */
function healthFacts(view) {
  const health = view.health || { status: "unknown" };
  const when = health.checked_at ? h("span", { class: "muted" }, ` (checked ${health.checked_at})`) : null;
  if (health.status === "failing") return h("span", {}, healthFlag(view), when);
  const said = health.status === "ok"
    ? `ok${health.detail ? `: ${health.detail}` : ""}`
    : `unknown (${health.detail || "not serving"})`;
  return h("span", { class: `health health-${health.status}` }, said, when);
}
