// Home: the launcher of the plugin pages the user may open (GET /api/me/pages), a tile each with its icon, title
// and plugin. Every logged-in user has it; for an account without admin rights it is the whole app. With no pages,
// it says how they come: for an admin, how a plugin adds them.
import * as api from "../api.js";
import { errorMessage, h, link } from "../dom.js";

export const title = "Home";

function tile(page) {
  const icon = page.icon
    ? h("img", { src: page.icon, alt: "", width: 40, height: 40 })
    : h("span", { class: "tile-letter", "aria-hidden": "true" }, (page.title.trim()[0] || "?").toUpperCase());
  return h(
    "li",
    {},
    h(
      "a",
      { class: "tile", href: page.href, dataset: { plugin: page.plugin, page: page.path } },
      h("span", { class: "tile-icon" }, icon),
      h("span", { class: "tile-text" },
        h("span", { class: "tile-title" }, page.title),
        h("span", { class: "tile-plugin" }, page.plugin_name)),
    ),
  );
}

function emptyNote(admin) {
  if (admin) {
    return h(
      "section",
      { class: "card narrow" },
      h("h2", {}, "No plugin adds a page yet"),
      h("p", {}, "Plugins add pages to this home page and to the navigation, for every user or for those with a ",
        "permission. A plugin lists them under ", h("code", {}, "pages"), " in its ", h("code", {}, "plugin.json"),
        ": each has a path, a title, an ES module in its ", h("code", {}, "static/"), " folder that renders it, ",
        "and an optional icon and permission (see “Pages” in the plugins README)."),
      h("p", {}, link("/admin/plugins", "Install a plugin on the Plugins page"), "."),
    );
  }
  return h(
    "section",
    { class: "card narrow" },
    h("h2", {}, "No apps for you yet"),
    h("p", {}, "The apps you may use show up here and in the navigation as soon as an administrator installs ",
      "them or gives your account the right to use them."),
    h("p", {}, "Meanwhile, ", link("/admin/account", "My account"), " has your password and two-factor login."),
  );
}

export async function render({ main, me, pages, loadPages, opens }) {
  main.append(h("h1", {}, "Home"));
  let answer = pages();
  try {
    answer = await loadPages();
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) throw err;
    main.append(h("div", { class: "alert alert-error", role: "alert" },
      `The list of your apps could not be loaded: ${errorMessage(err)}`));
  }
  const admin = opens("/api/admin/plugins");
  if (answer.pages.length) {
    main.append(
      h("p", { class: "lead" }, `Welcome, ${me.username}. These are the apps you can open.`),
      h("ul", { class: "launcher", "aria-label": "Apps" }, answer.pages.map(tile)),
    );
  } else {
    main.append(emptyNote(admin));
  }
  const unavailable = Object.entries(answer.unavailable || {});
  if (unavailable.length) {
    main.append(h(
      "p",
      { class: "muted unavailable-note" },
      "Not available now: ",
      unavailable.map(([id, state], i) => [
        i ? ", " : "",
        admin ? link(`/admin/plugins/${encodeURIComponent(id)}`, id) : id,
        ` (${state})`,
      ]),
      ".",
    ));
  }
}
