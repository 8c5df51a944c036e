// A plugin's page at /admin/apps/<plugin id>/<page path>: the shell imports the page's ES module from the plugin's
// prefix (same origin, under the app's Content-Security-Policy) and calls its render(ctx) in the page area; the
// contract and the SDK it gets (xcore.js) are documented in plugins/README.md ("The page SDK").
//
// While the page is open, GET /api/me/pages is asked again every few seconds (not while the tab is hidden):
// - the plugin was swapped (its stamp changed): a polite notice offers "Reload page", which imports the new
//   module (`?v=<stamp>` in its URL, so the browser cannot hand back the old code) and renders it again;
// - the plugin stopped serving (disabled, failed): the page gives way to a message saying so, and comes back
//   by itself when the plugin serves again; the navigation drops and regains its entries (the shell's loadPages).
// A module that fails to load, or a render that throws, shows its error here: the rest of the app keeps working.
import * as api from "../api.js";
import { button, clear, errorMessage, h, link } from "../dom.js";
import * as xcore from "../xcore.js";

export const title = "App";

const POLL_MS = 3000;
const STATE_WORDS = {
  disabled: "This plugin is disabled",
  sandboxed: "This plugin's pages are not shown",
};

function findPage(answer, pluginId, path) {
  return answer.pages.find((p) => p.plugin === pluginId && p.path === path) || null;
}

/** unavailableTitle is the heading for a plugin that does not serve: "This plugin is disabled", or "... is not
 * available (failed)" for the other states. */
function unavailableTitle(state) {
  return STATE_WORDS[state] || `This plugin is not available (${state})`;
}

/** unavailableText says why a plugin's page is not shown, and whether it comes back by itself. */
function unavailableText(pluginId, state) {
  if (state === "disabled") {
    return `The pages of the plugin ${pluginId} are off while it is disabled. `
      + "This page comes back by itself when it is enabled again.";
  }
  if (state === "sandboxed") {
    return `The plugin ${pluginId} runs sandboxed. A page runs in this app with your rights, which its sandbox `
      + "denies it, so xcore does not show its pages. Its routes serve as usual.";
  }
  return `The plugin ${pluginId} does not serve now (${state}). This page comes back by itself when it does.`;
}

export async function render(ctx) {
  const { main, params } = ctx;
  const pluginId = params.plugin;
  const pagePath = params.page;
  let answer = ctx.pages();
  try {
    answer = await ctx.loadPages();
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) throw err; // on the way to the login page
    // the list the app had at login serves
  }

  // The notice bar is in the page from the start, empty: a live region announces what is put in it later.
  const notice = h("div", { class: "app-notice", role: "status" });
  const area = h("div", { class: "app-page" });
  main.append(notice, area);

  let alive = true;
  let generation = 0; // each show() or message takes a new one; work of an older one is dropped
  let mode = null; // "page" (the module rendered or failed), "unavailable", "gone"
  let shown = null; // the page entry on screen (its stamp is the version loaded)
  let offered = null; // the stamp the notice offers
  let unavailableState = null;
  let pageCleanup = null;

  function stopPage() {
    generation += 1;
    const cleanup = pageCleanup;
    pageCleanup = null;
    if (cleanup) {
      try {
        cleanup();
      } catch (err) {
        console.error(`the cleanup of ${pluginId}'s page failed:`, err);
      }
    }
  }

  function clearNotice() {
    clear(notice);
    offered = null;
  }

  function failed(entry, what, err) {
    console.error(`${entry.plugin}'s page ${entry.path} ${what}:`, err);
    clear(area).append(
      h("h1", {}, entry.title),
      h(
        "div",
        { class: "alert alert-error", role: "alert" },
        h("p", {}, `This page ${what}: ${errorMessage(err)}`),
        h("p", {}, `The fault is in the plugin ${entry.plugin_name} ${entry.version}; the rest of xcore works. `,
          "The browser's console has the details."),
      ),
    );
  }

  async function show(entry) {
    stopPage();
    const mine = generation;
    clearNotice();
    clear(area);
    mode = "page";
    shown = entry;
    unavailableState = null;
    document.title = `${entry.title} · xcore`;
    let module;
    try {
      module = await import(`${entry.module}?v=${encodeURIComponent(entry.stamp)}`);
    } catch (err) {
      if (alive && mine === generation) failed(entry, "could not be loaded", err);
      return;
    }
    if (!alive || mine !== generation) return;
    if (typeof module.render !== "function") {
      failed(entry, "could not be shown", new TypeError(`${entry.module} exports no render(ctx) function`));
      return;
    }
    const pageTitle = typeof module.title === "string" && module.title.trim() ? module.title : entry.title;
    document.title = `${pageTitle} · xcore`;
    const pageCtx = {
      main: area,
      plugin: Object.freeze({
        id: entry.plugin, name: entry.plugin_name, version: entry.version, prefix: entry.prefix,
      }),
      page: Object.freeze({ path: entry.path, title: pageTitle }),
      query: new URLSearchParams(location.search),
      xcore,
    };
    try {
      const cleanup = await module.render(pageCtx);
      if (typeof cleanup !== "function") return;
      if (alive && mine === generation) pageCleanup = cleanup;
      else cleanup(); // the user left while the page was rendering
    } catch (err) {
      if (alive && mine === generation) failed(entry, "failed", err);
    }
  }

  function message(heading, ...body) {
    stopPage();
    clearNotice();
    shown = null;
    clear(area).append(h("h1", {}, heading), ...body);
    document.title = `${heading} · xcore`;
  }

  function unavailable(state) {
    mode = "unavailable";
    unavailableState = state;
    const admin = ctx.opens("/api/admin/plugins");
    message(
      unavailableTitle(state),
      h("p", {}, unavailableText(pluginId, state)),
      h("p", {}, admin
        ? link(`/admin/plugins/${encodeURIComponent(pluginId)}`, `See the plugin ${pluginId}`)
        : "An administrator can tell you more.",
      " · ", link("/admin/home", "Go to the home page")),
    );
  }

  function gone() {
    mode = "gone";
    message(
      "This page is not available",
      h("p", {}, `The plugin ${pluginId} no longer offers this page to your account.`),
      h("p", {}, link("/admin/home", "Go to the home page")),
    );
  }

  function offerReload(entry) {
    if (offered === entry.stamp) return;
    offered = entry.stamp;
    const reload = button("Reload page", {
      class: "primary small",
      onclick: async () => {
        await show(entry);
        if (alive) main.focus({ preventScroll: true });
      },
    });
    clear(notice).append(
      h("span", {}, `This plugin was updated (now ${entry.plugin_name} ${entry.version}).`),
      reload,
    );
  }

  /** follow brings the page in line with a fresh answer of GET /api/me/pages. */
  function follow(fresh) {
    const entry = findPage(fresh, pluginId, pagePath);
    const state = fresh.unavailable[pluginId];
    if (entry) {
      if (mode !== "page") show(entry);
      else if (entry.stamp !== shown.stamp) offerReload(entry);
      else if (offered) clearNotice(); // swapped back to the version shown
    } else if (state) {
      if (mode !== "unavailable" || unavailableState !== state) unavailable(state);
    } else if (mode !== "gone") {
      gone();
    }
  }

  const first = findPage(answer, pluginId, pagePath);
  const firstState = answer.unavailable[pluginId];
  if (first) {
    await show(first);
  } else if (firstState) {
    unavailable(firstState);
  } else {
    main.removeChild(notice);
    clear(area).append(
      h("h1", {}, "Page not found"),
      h("p", {}, `No plugin page of yours is at this address: the plugin ${pluginId} has no page ${pagePath}, `,
        "or not for your account."),
      link("/admin/home", "Go to the home page"),
    );
    document.title = "Not found · xcore";
    return () => { alive = false; };
  }

  let asking = false;
  async function poll() {
    if (!alive || asking || document.hidden) return;
    asking = true;
    try {
      const fresh = await ctx.loadPages(); // updates the navigation too
      if (alive) follow(fresh);
    } catch {
      // the server is restarting or the network is down: ask again next time
    } finally {
      asking = false;
    }
  }
  const timer = setInterval(poll, POLL_MS);
  const onVisible = () => { if (!document.hidden) poll(); };
  document.addEventListener("visibilitychange", onVisible);

  return () => {
    alive = false;
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
    stopPage();
  };
}
