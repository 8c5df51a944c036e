// Plugins: every plugin the host knows (state, errors, routes), installing a bundle (drop a .zip on the page or
// pick one, with progress and the server's verdict), a rescan of the plugins folder, and the per-plugin actions
// (enable, disable, reload, delete), which the detail page (plugin.js) shares. A user whose permissions (from
// /api/me) include MANAGE gets every control that changes what runs; one with MANAGE_SANDBOXED (an admin) installs
// bundles that run sandboxed and changes the plugins that run sandboxed; the others see the same page read-only.
// The server decides either way: these only spare a user the controls it would refuse.
//
// The plugin pages share a row of tabs (pluginTabs): Installed (this page), Browse (browse.js: what the catalogues
// offer) and Trusted keys (trust.js). Once the table is shown, this page asks the catalogues, quietly, which
// installed plugins have an update, and says so on the Browse tab and in the Version column.
import * as api from "../api.js";
import { badge, button, confirmDialog, errorBox, errorMessage, field, h, link, section, table, uid } from "../dom.js";

export const title = "Plugins";

const API = "/api/admin/plugins";
const CATALOGUE_API = "/api/admin/catalogue";
const TRUST_API = "/api/admin/trust";
const POLICY_API = "/api/admin/plugin-policy";
export const PLUGINS_PAGE = "/admin/plugins";
export const BROWSE_PAGE = "/admin/plugins/browse-catalogues"; // a hyphen: never a plugin id, so never a plugin's page
export const TRUST_PAGE = "/admin/plugins/trusted-keys";
const PENDING_RECHECK = 2000; // ms: a bundle still being copied settles within a few seconds
const MANAGE = "plugins.manage";
const MANAGE_SANDBOXED = "plugins.manage_sandboxed";
/** SERVER_RIGHTS warns whoever installs a plugin what its code can do. */
export const SERVER_RIGHTS =
  "A plugin runs inside the server with the server's rights: its code can read every secret (the signing key, " +
  "password hashes, 2FA secrets) and act as any account. Install only plugins you trust.";

/** SANDBOXED_ONLY tells a user who may change only sandboxed plugins what an upload of theirs may be. */
export const SANDBOXED_ONLY =
  "You may install plugins that run sandboxed, each in a confined process of its own (its plugin.json says " +
  '"sandbox": true, or this server sandboxes every plugin). A bundle that would run inside the server is refused.';

/** canManage is true when the signed-in user may install and change any plugin (the server's permission list). */
export function canManage(me) {
  return Boolean(me?.permissions?.includes(MANAGE));
}

/** canManageSandboxed is true when the signed-in user may install and change at least the sandboxed plugins. */
export function canManageSandboxed(me) {
  return canManage(me) || Boolean(me?.permissions?.includes(MANAGE_SANDBOXED));
}

/** mayChange is true when the signed-in user holds what changing the plugin of `view` needs, as the server
 * says in the view (`manage_permission`: plugins.manage_sandboxed when every version of it runs sandboxed). */
export function mayChange(me, view) {
  return canManage(me) || Boolean(me?.permissions?.includes(view?.manage_permission ?? MANAGE));
}

/** readOnlyNote says why the plugin controls are missing for a user who may only look. */
export function readOnlyNote() {
  return h(
    "p",
    { class: "muted read-only-note" },
    `Read-only: installing, enabling, disabling, reloading, configuring and deleting a plugin that runs inside the ` +
      `server need the permission ${MANAGE}, which only a superadmin holds, because such a plugin runs with the ` +
      `server's rights.`,
  );
}

/** pluginApi is the admin API address of one plugin (`suffix` like "/reload"). */
export function pluginApi(id, suffix = "") {
  return `${API}/${encodeURIComponent(id)}${suffix}`;
}

/** pluginPage is the address of a plugin's detail page. */
export function pluginPage(id) {
  return `/admin/plugins/${encodeURIComponent(id)}`;
}

/** pluginLabel names a plugin for people: "Notes (notes)", or just the id when it has no other name. */
export function pluginLabel(view) {
  return view.name && view.name !== view.id ? `${view.name} (${view.id})` : view.id;
}

/** outcome is the sentence for a plugin's state after an action: active, or failed with the reason. */
export function outcome(view) {
  const who = `${view.id}${view.version ? ` ${view.version}` : ""}`;
  if (view.state === "active") return `${who} is active${view.error ? ` (${view.error})` : "."}`;
  if (view.state === "failed") {
    // The manager's reason usually starts with the version ("1.0.0 failed: ..."): do not say it twice.
    const error = view.error || "no reason given";
    return view.version && error.startsWith(`${view.version} failed`) ? `${view.id} ${error}` : `${who} failed: ${error}`;
  }
  if (view.state === "disabled") return `${who} is disabled: its routes and tasks are off.`;
  return `${who} is ${view.state}${view.error ? `: ${view.error}` : "."}`;
}

/**
 * pluginTabs are the links between the plugin pages (Installed, Browse, Trusted keys), the one shown marked as the
 * current page; `opens(api)` (the app's ctx.opens) leaves out those whose API the user may not read. The Browse
 * tab has a slot for the number of updates (setUpdates).
 */
export function pluginTabs(current, opens = () => true) {
  const count = h("span", { class: "tab-badge", hidden: true });
  const tabs = [
    [PLUGINS_PAGE, "Installed", null],
    [BROWSE_PAGE, "Browse", CATALOGUE_API],
    [TRUST_PAGE, "Trusted keys", TRUST_API],
  ].filter(([, , path]) => !path || opens(path));
  const nav = h(
    "nav",
    { class: "tabs", "aria-label": "Plugin pages" },
    h("ul", {}, tabs.map(([href, label]) => h(
      "li",
      {},
      link(href, [label, href === BROWSE_PAGE ? count : null], {
        "aria-current": href === current ? "page" : null,
        dataset: { tab: label.toLowerCase().replace(/ /g, "-") },
      }),
    ))),
  );
  /** setUpdates shows how many installed plugins the catalogues have a newer version of (none: nothing). */
  nav.setUpdates = (n) => {
    count.textContent = n ? ` ${n} update${n === 1 ? "" : "s"}` : "";
    count.hidden = !n;
  };
  return nav;
}

/**
 * signatureText says who signed a plugin's bundle and whether this host trusts their key, from the view's
 * `signature`: "Signed by Team (key 0b75:…), trusted here as Team", "…, not trusted here", or "Unsigned".
 */
export function signatureText(signature) {
  if (!signature) return "Unsigned: nobody signed this bundle.";
  const who = `Signed by ${signature.signer} (key ${signature.key_id})`;
  return signature.trusted ? `${who}, trusted here as ${signature.trusted_as}.` : `${who}, not trusted here.`;
}

/**
 * trustBadge is a word for a bundle's signature in a list: trusted, not trusted or unsigned (words, not colours
 * alone). Not a `.badge`: a plugin's row has one badge, its state.
 */
export function trustBadge(signature) {
  if (!signature) return h("span", { class: "trust trust-unsigned" }, "unsigned");
  return signature.trusted
    ? h("span", { class: "trust trust-trusted" }, "trusted")
    : h("span", { class: "trust trust-untrusted" }, "not trusted");
}

/**
 * policyWarning is a warning, shown once the server has answered, that the signing policy (manager.plugins.policy)
 * is `unsigned`: any bundle runs here, signed or not, and how to change that. Empty under another policy, when the
 * user may not read the policy, or when the server does not answer (the page works without it).
 */
export function policyWarning(opens = () => true) {
  const box = h("div", { class: "alert alert-warn policy-warning", role: "note", hidden: true });
  if (opens(TRUST_API)) { // the policy is read as the trusted keys are (plugins.read)
    api.get(POLICY_API).then((policy) => {
      if (!policy.unsigned_runs) return;
      const keys = policy.trusted_keys
        ? `${policy.trusted_keys} key${policy.trusted_keys === 1 ? " is" : "s are"} trusted, but that stops nothing.`
        : "No key is trusted.";
      box.replaceChildren(
        h("strong", {}, "Unsigned plugins run here. "),
        `The signing policy (${policy.setting}) is "${policy.policy}": any bundle is installed and runs, whoever ` +
          `signed it or if nobody did. ${keys} `,
        policy.advice,
      );
      box.hidden = false;
    }, () => {});
  }
  return box;
}

/**
 * healthFlag flags a plugin whose health check fails (the view's `health`, from its health()): "health failing:
 * <detail>". Nothing for a healthy plugin or one without a health check; a failing plugin still serves.
 */
export function healthFlag(view) {
  const health = view.health;
  if (health?.status !== "failing") return null;
  return h(
    "span",
    { class: "plugin-error health-failing", title: health.checked_at ? `checked ${health.checked_at}` : null },
    `health failing${health.detail ? `: ${health.detail}` : ""}`,
  );
}

const LEVELS = { info: "Information", warning: "Warning", critical: "Critical" };

/**
 * noticeList shows the catalogues' notices on a plugin, each with its level in words ("Warning from Team
 * plugins: …") as well as its colour; null when there is none.
 */
export function noticeList(notices, label = "Notices from the catalogues") {
  if (!notices?.length) return null;
  return h(
    "ul",
    { class: "notices", "aria-label": label },
    notices.map((n) => h(
      "li",
      { class: `notice notice-${LEVELS[n.level] ? n.level : "warning"}`, dataset: { level: n.level } },
      h("strong", {}, `${LEVELS[n.level] || n.level}`),
      n.catalogue ? ` from ${n.catalogue}: ` : ": ",
      n.message,
    )),
  );
}

function signerCell(view) {
  const sig = view.signature;
  return h(
    "span",
    { class: "signer", title: signatureText(sig) },
    sig ? [h("span", { class: "signer-name" }, sig.signer), " "] : null,
    trustBadge(sig),
  );
}

/** problemNodes shows a refused request: the server's detail, and the rule and entry a bundle broke. */
export function problemNodes(err) {
  const problem = err?.problem;
  const first = problem?.errors?.[0] || {};
  const rule = problem?.rule || first.rule;
  const entry = problem?.entry ?? (first.rule ? first.field : null);
  const facts = [];
  if (rule) facts.push(h("dt", {}, "Rule"), h("dd", {}, h("code", {}, rule)));
  if (entry) facts.push(h("dt", {}, "Entry"), h("dd", {}, h("code", {}, entry)));
  const nodes = [h("p", { class: "problem-detail" }, errorMessage(err))];
  if (facts.length) nodes.push(h("dl", { class: "stats" }, facts));
  return nodes;
}

/**
 * askDelete asks, in a dialog naming the plugin, whether to delete it and whether to purge its data; the text
 * says which will happen as the checkbox changes. Resolves to {purge} when confirmed, false when cancelled.
 */
export function askDelete(view) {
  const name = pluginLabel(view);
  const purge = h("input", { type: "checkbox", id: uid("purge"), name: "purge" });
  const summary = h("p", { class: "delete-summary", "aria-live": "polite" });
  const say = () => {
    summary.textContent = purge.checked
      ? `The plugin ${name} will be deleted and its data purged: its zip files are removed, so its routes and ` +
        `tasks stop, and its data folder (plugin-data/${view.id}), its settings and its permissions are deleted ` +
        "for good. This cannot be undone."
      : `The plugin ${name} will be deleted: its zip files are removed, so its routes and tasks stop. Its data ` +
        `is kept: the folder plugin-data/${view.id}, its settings and its permissions stay, and installing the ` +
        "plugin again brings them back.";
  };
  purge.addEventListener("change", say);
  say();
  return confirmDialog({
    title: `Delete the plugin ${name}?`,
    body: summary,
    extra: h("div", { class: "field check" }, purge, h("label", { for: purge.id }, "Also delete the plugin's data")),
    confirmLabel: `Delete ${view.id}`,
    danger: true,
    collect: () => ({ purge: purge.checked }),
  });
}

/**
 * runAction performs `kind` (enable, disable, reload, delete) on a plugin and resolves to a sentence saying
 * the outcome, or null when the user cancelled the deletion. Throws ApiError when the server refuses.
 */
export async function runAction(kind, view) {
  if (kind === "delete") {
    const answer = await askDelete(view);
    if (!answer) return null;
    const removed = await api.del(pluginApi(view.id), { purge: answer.purge ? "true" : null });
    // `removed` names every path deleted: the zips, and with purge the data folder too.
    const zips = removed.removed.filter((name) => name.endsWith(".zip"));
    return `Deleted ${view.id}${zips.length ? ` (${zips.join(", ")})` : ""}; its data was ` +
      `${removed.purged ? "purged" : "kept"}.`;
  }
  const after = await api.post(pluginApi(view.id, `/${kind}`));
  return outcome(after);
}

/**
 * busy runs `work` with `el` disabled, so a second press cannot repeat it. A disabled button loses the focus;
 * it gets it back afterwards when nothing else took it, so keyboard users stay where they were.
 */
export async function busy(el, work) {
  el.disabled = true;
  try {
    return await work();
  } finally {
    el.disabled = false;
    if (el.isConnected && (!document.activeElement || document.activeElement === document.body)) el.focus();
  }
}

const VERBS = { enable: "Enable", disable: "Disable", reload: "Reload", delete: "Delete" };

/**
 * actionButtons are a plugin's action buttons (Enable or Disable, Reload, Delete). `perform(kind, button)` runs
 * when one is pressed. Each button's accessible name includes the plugin id ("Disable notes").
 */
export function actionButtons(view, perform) {
  const kinds = [view.enabled ? "disable" : "enable", "reload", "delete"];
  return h(
    "div",
    { class: "plugin-actions" },
    kinds.map((kind) => {
      const el = button(VERBS[kind], {
        class: kind === "delete" ? "small danger-outline" : "small",
        "aria-label": `${VERBS[kind]} ${view.id}`,
        dataset: { action: kind, plugin: view.id },
      });
      el.addEventListener("click", () => perform(kind, el));
      return el;
    }),
  );
}

function routesCell(view) {
  const count = view.routes.length;
  if (!count) return h("span", { class: "muted" }, view.state === "active" ? "none" : "not mounted");
  return h(
    "details",
    { class: "routes-list" },
    h("summary", {}, `${count} route${count === 1 ? "" : "s"}`),
    h("ul", {}, view.routes.map((route) => h("li", {}, h("code", {}, route)))),
  );
}

/** render shows the plugins page. */
export async function render({ main, me, opens }) {
  const manage = canManage(me);
  const sandboxedOnly = !manage && canManageSandboxed(me);
  const rescan = button("Rescan", { class: "primary", title: "Re-read the plugins folder and retry failed versions" });
  const tabs = pluginTabs(PLUGINS_PAGE, opens);
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Plugins"), h("span", { class: "spacer" }), manage ? rescan : null),
    tabs,
    policyWarning(opens),
  );

  // Installing: a drop zone around a real file input, so the keyboard and screen readers get the same feature.
  const picker = h("input", { type: "file", name: "bundle", accept: ".zip,application/zip" });
  const pickerField = field("Choose a plugin zip", picker, {
    hint: "A bundle made by `xcore plugin pack`. The server checks it before installing it.",
  });
  const rights = manage
    ? h("p", { class: "alert alert-warn note server-rights" }, SERVER_RIGHTS)
    : h("p", { class: "alert note sandboxed-only" }, SANDBOXED_ONLY);
  const zone = h(
    "div",
    { class: "dropzone", dataset: { dropzone: "plugins" } },
    h("p", { class: "dropzone-text" }, "Drop a plugin .zip here, or choose one:"),
    pickerField,
  );
  const progress = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "progress-text" });
  const progressBox = h("div", { class: "upload-progress", hidden: true }, progressText, progress);
  const uploadResult = h("div", { class: "upload-result", role: "status" });
  const uploadError = h("div", { class: "alert alert-error upload-error", role: "alert", hidden: true });
  const installSection = section("Install a plugin", rights, zone, progressBox, uploadResult, uploadError);
  main.append(manage || sandboxedOnly ? installSection : readOnlyNote());
  if (sandboxedOnly) main.append(readOnlyNote());

  // The table and the outcome of the last action.
  const listError = errorBox();
  const actionStatus = h("p", { class: "action-status", role: "status" });
  const actionError = errorBox();
  const listBox = h("div");
  main.append(section("Installed plugins", listError, actionError, actionStatus, listBox));

  let views = [];
  let recheck = null;
  let gone = false;
  let offers = {}; // plugin id → the newer version a catalogue has of it

  /**
   * checkUpdates asks the catalogues (after the table is shown, so the page never waits on them) which installed
   * plugins have a newer release; a failure, or no catalogue configured, shows nothing.
   */
  async function checkUpdates() {
    if (opens && !opens(CATALOGUE_API)) return;
    let listing;
    try {
      listing = await api.get(CATALOGUE_API);
    } catch {
      return;
    }
    if (gone || !listing?.catalogues?.length) return;
    const updates = listing.plugins.filter((p) => p.update && p.latest);
    offers = Object.fromEntries(updates.map((p) => [p.id, p.latest.version]));
    tabs.setUpdates(updates.length);
    if (updates.length) show();
  }

  async function load(focus = null) {
    clearTimeout(recheck);
    try {
      views = await api.get(API);
      listError.hide();
    } catch (err) {
      listError.show(err);
      return;
    }
    if (gone) return;
    show(focus);
    if (views.some((v) => v.state === "pending")) recheck = setTimeout(load, PENDING_RECHECK);
  }

  function show(focus = null) {
    // Redrawing the table must not throw the keyboard out of it: the same row's same action gets the focus back
    // (or, when that action changed, as Disable to Enable, the row's first one).
    const before = document.activeElement;
    const row = before && listBox.contains(before) ? before.closest("tr") : null;
    const keep = focus || (row ? { plugin: row.dataset.plugin, action: before.dataset.action } : null);
    listBox.replaceChildren(table({
      caption: "Installed plugins",
      empty: "No plugin is installed. Upload a .zip above, or copy one into the data directory's plugins folder.",
      rowProps: (v) => ({ dataset: { plugin: v.id } }),
      columns: [
        { label: "ID", render: (v) => link(pluginPage(v.id), v.id) },
        { label: "Name", render: (v) => v.name },
        {
          label: "Version",
          render: (v) => h(
            "span",
            {},
            v.version,
            v.failed_versions?.length ? h("span", { class: "version-summary muted" }, ` (${v.summary})`) : null,
            offers[v.id]
              ? h("span", { class: "cell-note update-note" }, link(BROWSE_PAGE, `${offers[v.id]} available`, {
                "aria-label": `${offers[v.id]} available for ${v.id}`,
              }))
              : null,
          ),
        },
        { label: "State", render: (v) => badge(v.state) },
        { label: "Signed by", render: signerCell },
        {
          label: "Errors",
          class: "error-cell",
          render: (v) => {
            const parts = [v.error ? h("span", { class: "plugin-error" }, v.error) : null, healthFlag(v)].filter(Boolean);
            return parts.length ? parts.flatMap((part, i) => (i ? [h("br"), part] : [part])) : null;
          },
        },
        { label: "Routes", render: routesCell },
        manage || sandboxedOnly
          ? { label: "Actions", render: (v) => (mayChange(me, v) ? actionButtons(v, (kind, el) => act(kind, v, el)) : null) }
          : null,
      ].filter(Boolean),
      rows: views,
    }));
    const again = keep && listBox.querySelector(`tr[data-plugin="${CSS.escape(keep.plugin)}"]`);
    if (again) {
      (again.querySelector(`button[data-action="${keep.action}"]`) || again.querySelector(keep.action ? "button" : "a"))
        ?.focus();
    }
  }

  async function act(kind, view, el) {
    actionError.hide();
    actionStatus.textContent = "";
    let cancelled = false;
    await busy(el, async () => {
      try {
        const said = await runAction(kind, view);
        cancelled = said === null;
        if (said) actionStatus.textContent = said;
      } catch (err) {
        actionError.show(`${VERBS[kind]} ${view.id}: ${errorMessage(err)}`);
      }
    });
    if (cancelled) return;
    await load({ plugin: view.id, action: kind });
    if (!listBox.contains(document.activeElement)) rescan.focus(); // the row is gone
  }

  rescan.addEventListener("click", () => busy(rescan, async () => {
    actionError.hide();
    actionStatus.textContent = "";
    try {
      views = await api.post(`${API}/reload`);
      const failed = views.filter((v) => v.state === "failed").length;
      actionStatus.textContent = `Rescanned the plugins folder: ${views.length} plugin${views.length === 1 ? "" : "s"}` +
        `${failed ? `, ${failed} failed` : ""}.`;
      show();
    } catch (err) {
      actionError.show(`Rescan: ${errorMessage(err)}`);
    }
  }));

  async function install(file) {
    uploadError.hidden = true;
    uploadError.replaceChildren();
    uploadResult.replaceChildren();
    uploadResult.className = "upload-result";
    if (!/\.zip$/i.test(file.name)) {
      uploadError.append(h("p", {}, `${file.name} is not a .zip file. A plugin bundle is a .zip made by xcore plugin pack.`));
      uploadError.hidden = false;
      return;
    }
    progress.value = 0;
    progressText.textContent = `Uploading ${file.name}…`;
    progressBox.hidden = false;
    const form = new FormData();
    form.append("data", file, file.name);
    try {
      const view = await api.upload(API, form, (fraction) => { progress.value = fraction; });
      progress.value = 1;
      progressText.textContent = `Uploaded ${file.name}.`;
      uploadResult.className = `upload-result alert ${view.state === "active" ? "alert-ok" : "alert-error"}`;
      uploadResult.append(
        h("p", {}, "Installed ", link(pluginPage(view.id), pluginLabel(view)), ": ", badge(view.state)),
        h("p", {}, outcome(view)),
      );
    } catch (err) {
      progressBox.hidden = true;
      uploadError.append(h("p", { class: "problem-title" }, `The server refused ${file.name}.`), ...problemNodes(err));
      uploadError.hidden = false;
    }
    await load();
  }

  // One upload at a time, in the order the files came (several dropped at once, or a second pick meanwhile).
  let queue = Promise.resolve();
  function installAll(files) {
    for (const file of files) queue = queue.then(() => install(file));
    return queue;
  }

  picker.addEventListener("change", () => {
    const files = [...picker.files];
    picker.value = ""; // picking the same file again is a change too
    installAll(files);
  });
  let depth = 0; // dragenter/dragleave fire for every child: count them to know when the drag left the zone
  zone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    zone.classList.add("over");
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation();
    depth = 0;
    zone.classList.remove("over");
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) installAll(files);
  });
  // A file dropped beside the zone would make the browser open (or download) it and leave the admin.
  const keepPage = (event) => {
    if (event.dataTransfer?.types?.includes("Files")) event.preventDefault();
  };
  window.addEventListener("dragover", keepPage);
  window.addEventListener("drop", keepPage);

  await load();
  checkUpdates(); // not awaited: the catalogues may be slow to answer, the page is not
  return () => {
    gone = true;
    clearTimeout(recheck);
    window.removeEventListener("dragover", keepPage);
    window.removeEventListener("drop", keepPage);
  };
}
