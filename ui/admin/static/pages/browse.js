// Browse: what the configured catalogues offer (manager.plugins.catalogues, GET /api/admin/catalogue), searched by
// words, with one card per plugin (its description, the newest release that fits this xcore, the version installed
// here, the catalogues' notices, a blocklist entry) and a button that installs it, or updates it to that release.
// The server downloads the bundle, holds it to the catalogue's sha256, and installs it as an upload is (its
// signature, the policy, the blocklists, the permission its running in process or sandboxed needs); this page only
// shows what it answered. The catalogues themselves (name, signer, last fetch, why one cannot be used) come first,
// with a button that fetches them again.
import * as api from "../api.js";
import { badge, button, errorBox, errorMessage, field, fmtBytes, fmtTime, h, input, link, section, table, uid } from "../dom.js";
import {
  BROWSE_PAGE, TRUST_PAGE, busy, canManageSandboxed, noticeList, outcome, pluginLabel, pluginPage, pluginTabs,
  problemNodes,
} from "./plugins.js";

export const title = "Browse plugins";

const API = "/api/admin/catalogue";

/** catalogueState is a catalogue's state in words: usable, usable from an older copy (why), or not usable (why). */
function catalogueState(c) {
  if (c.error) return h("span", {}, badge("error"), " ", h("span", { class: "plugin-error" }, c.error));
  if (c.stale) return h("span", {}, badge("stale"), " ", h("span", { class: "muted" }, `using the copy of the last fetch: ${c.stale}`));
  return badge("ok");
}

function cataloguesPart(listing) {
  if (!listing.catalogues.length) {
    return h(
      "p",
      { class: "muted no-catalogues" },
      "No catalogue is configured. List them in the setting manager.plugins.catalogues (an https address of a " +
        "catalogue's index.json or of its folder, or a path), then trust the key that signed each under ",
      link(TRUST_PAGE, "Trusted keys"),
      ".",
    );
  }
  const broken = listing.catalogues.some((c) => c.error);
  return [
    table({
      caption: "Catalogues",
      columns: [
        { label: "Name", render: (c) => c.name },
        { label: "Source", class: "wrap", render: (c) => h("code", {}, c.source) },
        { label: "Signed by", render: (c) => (c.signer ? h("span", {}, c.signer, " ", h("code", { class: "key-id" }, c.key_id)) : null) },
        { label: "Plugins", class: "num", render: (c) => String(c.plugins ?? 0) },
        { label: "Fetched", render: (c) => (c.fetched ? fmtTime(c.fetched) : "never") },
        { label: "State", class: "error-cell", render: catalogueState },
      ],
      rows: listing.catalogues,
      rowProps: (c) => ({ dataset: { catalogue: c.source } }),
    }),
    broken
      ? h("p", { class: "muted" }, "A catalogue signed by a key this host does not trust is used for nothing: add its " +
        "key under ", link(TRUST_PAGE, "Trusted keys"), ", then refresh the catalogues.")
      : null,
  ];
}

/**
 * offerPart is what a card offers: an Install or "Update to X" button (for a user who may install), or why there is
 * none (up to date; nothing fits this xcore, said beside a disabled button); `perform(plugin, button)` runs when the
 * button is pressed.
 */
function offerPart(p, mayInstall, perform) {
  const latest = p.latest;
  if (latest && p.installed && !p.update) {
    return h("p", { class: "offer-none muted" }, latest.version === p.installed
      ? `Up to date: ${p.installed} is the newest release that fits this xcore.`
      : `${p.installed} is installed; the newest release the catalogues have that fits this xcore is ${latest.version}.`);
  }
  if (!mayInstall) return null;
  const update = Boolean(p.installed);
  if (!latest) {
    const reasonId = uid("why");
    return h(
      "div",
      { class: "actions offer" },
      h("p", { class: "offer-none muted", id: reasonId }, update
        ? "No newer release of it fits this xcore, or every one that would is blocked."
        : "No release of it fits this xcore, or every one that would is blocked."),
      button(update ? "Update" : "Install", {
        disabled: true, "aria-describedby": reasonId, "aria-label": `${update ? "Update" : "Install"} ${p.id}`,
      }),
    );
  }
  const el = button(update ? `Update to ${latest.version}` : "Install", {
    class: "primary",
    "aria-label": update ? `Update to ${latest.version}: ${p.id}` : `Install ${p.id} ${latest.version}`,
    dataset: { action: update ? "update" : "install", plugin: p.id },
  });
  el.addEventListener("click", () => perform(p, el));
  return h("div", { class: "actions offer" }, el);
}

function pluginCard(p, mayInstall, perform) {
  const titleId = uid("plugin");
  const latest = p.latest;
  const facts = [
    ["ID", h("code", {}, p.id)],
    p.author ? ["Author", p.author] : null,
    ["Catalogue", p.catalogue],
    ["Newest that fits", latest
      ? h("span", {}, latest.version, h("span", { class: "muted" },
        ` (${[latest.signer ? `signed by ${latest.signer}` : "unsigned", fmtBytes(latest.size)].join(", ")})`))
      : "none"],
    ["Installed", p.installed
      ? h("span", {}, link(pluginPage(p.id), `${p.id} ${p.installed}`, { class: "installed-link" }),
        p.update ? [" ", h("span", { class: "badge badge-update" }, "update available")] : null)
      : "not installed"],
    p.versions?.length > 1 ? ["Versions", p.versions.join(", ")] : null,
  ].filter(Boolean);
  return h(
    "article",
    { class: "card plugin-card", "aria-labelledby": titleId, dataset: { plugin: p.id } },
    h("h3", { id: titleId }, p.name || p.id),
    p.description ? h("p", { class: "plugin-description" }, p.description) : null,
    h("dl", { class: "stats" }, facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    noticeList(p.notices, `Notices on ${p.id}`),
    p.blocked ? h("p", { class: "alert alert-error blocked" }, `Installed ${p.installed} is ${p.blocked}`) : null,
    offerPart(p, mayInstall, perform),
  );
}

/** render shows the Browse page. */
export async function render({ main, me, opens, query }) {
  const mayInstall = canManageSandboxed(me);
  const refresh = button("Refresh catalogues", { title: "Fetch every catalogue again now" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Browse plugins"), h("span", { class: "spacer" }), refresh),
    pluginTabs(BROWSE_PAGE, opens),
  );

  const state = { q: query.get("q") || "", listing: null };
  const status = h("p", { class: "action-status", role: "status" });
  const result = h("div", { class: "install-result", role: "status" });
  const failure = h("div", { class: "alert alert-error install-error", role: "alert", hidden: true });
  const listError = errorBox();
  const cataloguesBox = h("div");
  const search = input("q", {
    type: "search", value: state.q, autocomplete: "off", placeholder: "Words in an id, name or description",
  });
  const searchForm = h(
    "form",
    { class: "filters catalogue-search", role: "search" },
    field("Search the catalogues", search),
    h("div", { class: "field" }, button("Search", { type: "submit" })),
  );
  const count = h("p", { class: "muted result-count", role: "status" });
  const cards = h("div", { class: "plugin-cards" });
  main.append(...[
    mayInstall ? null : h("p", { class: "muted read-only-note" },
      "Read-only: installing a plugin needs the permission plugins.manage_sandboxed (an admin, for a plugin that " +
      "runs sandboxed) or plugins.manage (a superadmin, for any)."),
    listError,
    status,
    result,
    failure,
    section("Catalogues", cataloguesBox),
    section("Plugins", searchForm, count, cards),
  ].filter(Boolean));

  function remember() {
    history.replaceState(null, "", `${BROWSE_PAGE}${state.q ? `?q=${encodeURIComponent(state.q)}` : ""}`);
  }

  function show(focus = null) {
    const listing = state.listing;
    cataloguesBox.replaceChildren(...[cataloguesPart(listing)].flat().filter(Boolean));
    const n = listing.plugins.length;
    count.textContent = state.q
      ? `${n} plugin${n === 1 ? " matches" : "s match"} “${state.q}”.`
      : `${n} plugin${n === 1 ? "" : "s"} in the catalogues.`;
    cards.replaceChildren(...listing.plugins.map((p) => pluginCard(p, mayInstall, perform)));
    if (!n) {
      cards.append(h("p", { class: "empty muted" }, state.q
        ? `No plugin in the catalogues matches “${state.q}”.`
        : listing.catalogues.length ? "The catalogues list no plugin." : "There is no catalogue to list plugins from."));
    }
    if (focus) {
      // The card was drawn again: keep the keyboard on it (its new button, else the link to the installed plugin).
      const card = cards.querySelector(`article[data-plugin="${CSS.escape(focus)}"]`);
      (card?.querySelector(".offer button:not(:disabled)") || card?.querySelector("a[href]") || search).focus();
    }
  }

  async function load(focus = null) {
    remember();
    try {
      state.listing = await api.get(API, { q: state.q });
      listError.hide();
    } catch (err) {
      listError.show(`The catalogues cannot be listed: ${errorMessage(err)}`);
      return false;
    }
    show(focus);
    return true;
  }

  async function perform(p, el) {
    const version = p.latest.version;
    const verb = p.installed ? "update" : "install";
    failure.hidden = true;
    failure.replaceChildren();
    result.replaceChildren();
    result.className = "install-result";
    status.textContent = `${p.installed ? `Updating ${p.id} to` : `Installing ${p.id}`} ${version} from ${p.catalogue}…`;
    let view = null;
    await busy(el, async () => {
      try {
        view = await api.post(`${API}/install`, { id: p.id, version });
      } catch (err) {
        status.textContent = "";
        failure.append(h("p", { class: "problem-title" }, `Could not ${verb} ${p.id} ${version}.`), ...problemNodes(err));
        failure.hidden = false;
      }
    });
    if (!view) return;
    status.textContent = "";
    result.className = `install-result alert ${view.state === "active" ? "alert-ok" : "alert-error"}`;
    result.append(
      h("p", {}, `${p.installed ? "Updated" : "Installed"} `, link(pluginPage(view.id), pluginLabel(view)), " ",
        view.version || version, ": ", badge(view.state)),
      h("p", {}, outcome(view)),
    );
    await load(p.id);
  }

  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = search.value.trim();
    load();
  });

  refresh.addEventListener("click", () => busy(refresh, async () => {
    listError.hide();
    status.textContent = "Fetching the catalogues…";
    try {
      const fresh = await api.post(`${API}/refresh`);
      // The refresh answers with everything; a search asks again for what matches.
      state.listing = state.q ? await api.get(API, { q: state.q }) : fresh;
    } catch (err) {
      status.textContent = "";
      listError.show(`Refreshing the catalogues: ${errorMessage(err)}`);
      return;
    }
    show();
    const all = state.listing.catalogues;
    const broken = all.filter((c) => c.error).length;
    status.textContent = `Fetched the catalogues again: ${all.length} catalogue${all.length === 1 ? "" : "s"}` +
      `${broken ? `, ${broken} not usable` : ""}.`;
  }));

  await load();
}
