// The admin UI's shell: the router, the page layout (navigation, account menu) and the session start.
//
// Each view is a module in pages/ exporting `title` and `render(ctx)`. ctx: { main, params, query, me,
// navigate(path), refreshMe(), pages(), loadPages(), opens(api) }. render may return a cleanup function
// (timers, listeners), called when the user leaves the view. Only the view's own content goes in `main`; every
// view has exactly one <h1>.
//
// Plugin pages (plugin.json's `pages`) are listed by GET /api/me/pages: the navigation offers them after "Home",
// and pages/apppage.js shows one at /admin/apps/<plugin id>/<page path>, through the SDK in xcore.js.

import * as api from "./api.js";
import { button, clear, errorMessage, h, link } from "./dom.js";

// Each page names the API it reads (`api`). The server says which of them its access rules open to the user
// (GET /api/me/access), and the app offers only those pages: it keeps no copy of the rules.
const ROUTES = [
  ["/admin/setup", "setup", { bare: true, public: true }],
  ["/admin/login", "login", { bare: true, public: true }],
  ["/admin", "dashboard", { api: "/api/admin/system" }],
  ["/admin/metrics", "metrics", { api: "/api/admin/metrics" }],
  ["/admin/home", "home", {}],
  ["/admin/apps/:plugin/:page", "apppage", {}],
  ["/admin/plugins", "plugins", { api: "/api/admin/plugins" }],
  // Before /admin/plugins/:id; a hyphen is never in a plugin id, so no plugin's page is hidden by these.
  ["/admin/plugins/browse-catalogues", "browse", { api: "/api/admin/catalogue" }],
  ["/admin/plugins/trusted-keys", "trust", { api: "/api/admin/trust" }],
  ["/admin/plugins/:id", "plugin", { api: "/api/admin/plugins" }],
  ["/admin/tasks", "tasks", { api: "/api/admin/tasks" }],
  ["/admin/tasks/runs", "runs", { api: "/api/admin/tasks/runs" }],
  ["/admin/tasks/runs/:id", "run", { api: "/api/admin/tasks/runs" }],
  ["/admin/users", "users", { api: "/api/admin/users" }],
  ["/admin/users/:id", "user", { api: "/api/admin/users" }],
  ["/admin/roles", "roles", { api: "/api/admin/roles" }],
  ["/admin/access", "access", { api: "/api/admin/access/explain" }],
  ["/admin/logs", "logs", { api: "/api/admin/logs" }],
  ["/admin/audit", "audit", { api: "/api/admin/audit" }],
  ["/admin/backups", "backups", { api: "/api/admin/backups" }],
  ["/admin/account", "account", {}],
];
const PAGE_APIS = [...new Set(ROUTES.map(([, , options]) => options.api).filter(Boolean))];

const NAV = [
  ["/admin", "Dashboard"],
  ["/admin/metrics", "Metrics"],
  ["/admin/plugins", "Plugins"],
  ["/admin/tasks", "Tasks"],
  ["/admin/users", "Users"],
  ["/admin/roles", "Roles"],
  ["/admin/access", "Access"],
  ["/admin/logs", "Logs"],
  ["/admin/audit", "Audit log"],
  ["/admin/backups", "Backups"],
];

const HOME = "/admin/home";
const NO_PAGES = Object.freeze({ pages: [], unavailable: {} });

// pages: the answer of GET /api/me/pages; nav: the navigation shown, rebuilt in place when the pages change.
const state = { me: null, access: null, pages: NO_PAGES, cleanup: null, renderSeq: 0, nav: null, active: null };

function match(pathname) {
  const path = pathname.replace(/\/+$/, "") || "/admin";
  for (const [pattern, page, options] of ROUTES) {
    const names = [];
    const regex = new RegExp(
      "^" + pattern.replace(/:([a-z]+)/g, (_, name) => { names.push(name); return "([^/]+)"; }) + "$",
    );
    const found = regex.exec(path);
    if (found) {
      const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(found[i + 1])]));
      return { page, options, params };
    }
  }
  return null;
}

/** opens says whether the server's access rules let the user read `path` (no path: every user may). */
function opens(path) {
  return !path || !!state.access?.[path]?.allowed;
}

function apiOf(href) {
  return ROUTES.find(([pattern]) => pattern === href)?.[2].api;
}

/** currentUser is the logged-in user as GET /api/me answered (null before login); the SDK's user() reads it. */
export function currentUser() {
  return state.me;
}

/** navigate shows another view without a page load (history.pushState). */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

function currentPath() {
  return location.pathname + location.search;
}

function goToLogin() {
  const here = currentPath();
  if (location.pathname.startsWith("/admin/login")) return;
  state.me = null;
  navigate(`/admin/login?next=${encodeURIComponent(here)}`, { replace: true });
}

async function loadMe() {
  state.access = null;
  try {
    state.me = await api.get("/api/me", null, { noRefresh: false });
    const [access, pages] = await Promise.all([
      api.get("/api/me/access", { path: PAGE_APIS }),
      // Without the list the app still works: the home page asks again, and says why when it fails.
      api.get("/api/me/pages").catch((err) => {
        if (err.status === 401) throw err;
        return NO_PAGES;
      }),
    ]);
    state.access = access;
    state.pages = pages;
    // /health is public and cheap; it says whether this run is in safe mode (every plugin off).
    state.safeMode = (await api.get("/health").catch((err) => err.problem || null))?.safe_mode || null;
  } catch (err) {
    state.me = null;
    state.pages = NO_PAGES;
    // 401: no session. 503 before the first account exists: the server asks for setup first.
    if (err.status !== 401 && !(err.status === 503 && /setup/.test(err.message))) throw err;
  }
  return state.me;
}

/** pagesKey is what the navigation shows of the plugin pages, to tell whether it must be rebuilt. */
function pagesKey(answer) {
  return JSON.stringify(answer.pages.map((p) => [p.href, p.title, p.icon]));
}

/**
 * loadPages asks the server again which plugin pages the user may open (GET /api/me/pages), keeps the answer
 * and updates the navigation; resolves to the answer, rejects with ApiError.
 */
async function loadPages() {
  setPages(await api.get("/api/me/pages"));
  return state.pages;
}

function setPages(answer) {
  const changed = pagesKey(answer) !== pagesKey(state.pages);
  state.pages = answer;
  if (changed) refreshNav();
}

function navItem(href, content, active, props = {}) {
  return h("li", {}, h("a", { href, "aria-current": active === href ? "page" : null, ...props }, content));
}

/** navIcon is a plugin page's icon in the navigation, or an empty space of its size (the titles line up). */
function navIcon(src) {
  return src ? h("img", { src, alt: "", class: "nav-icon", width: 16, height: 16 }) : h("span", { class: "nav-icon" });
}

/** navContent is the navigation's lists: Home, the plugin pages, then the admin pages the user may open. */
function navContent(active) {
  const apps = h(
    "ul",
    {},
    navItem(HOME, "Home", active),
    state.pages.pages.map((p) => navItem(
      p.href,
      [navIcon(p.icon), p.title],
      active,
      { title: `${p.title} (${p.plugin_name})`, class: "nav-app" },
    )),
  );
  const items = NAV.filter(([href]) => opens(apiOf(href)));
  if (!items.length) return [apps];
  return [
    apps,
    h("h2", { class: "nav-group", id: "nav-admin" }, "Administration"),
    h("ul", { "aria-labelledby": "nav-admin" }, items.map(([href, label]) => navItem(href, label, active))),
  ];
}

/** refreshNav rebuilds the navigation's lists in place (the plugin pages changed), keeping the focus on its link. */
function refreshNav() {
  const nav = state.nav;
  if (!nav?.isConnected) return;
  const focused = nav.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
  for (const el of [...nav.children].slice(1)) el.remove();
  nav.append(...navContent(state.active));
  if (focused) [...nav.querySelectorAll("a[href]")].find((a) => a.getAttribute("href") === focused)?.focus();
}

function layout(me, active) {
  const nav = h(
    "nav",
    { class: "sidebar", "aria-label": "Main" },
    h("p", { class: "brand" }, h("a", { href: HOME }, "xcore")),
    navContent(active),
  );
  state.nav = nav;
  state.active = active;
  const account = h(
    "div",
    { class: "account-menu" },
    link("/admin/account", me.username, { "aria-current": active === "/admin/account" ? "page" : null, title: "My account" }),
    button("Log out", {
      class: "link-button",
      onclick: async () => {
        await api.logout();
        state.me = null;
        state.access = null;
        state.pages = NO_PAGES;
        navigate("/admin/login", { replace: true });
      },
    }),
  );
  const totp = me.totp_required && !me.totp_enabled
    ? h(
      "div",
      { class: "alert alert-warn", role: "note" },
      "Your role requires two-factor login. ",
      link("/admin/account", "Turn it on in My account"),
      ".",
    )
    : null;
  const banner = h("div", {}, safeModeBanner(), totp);
  return { nav, header: h("header", { class: "topbar" }, account), banner };
}

/** safeModeBanner says, on every page, that this run has every plugin off, why, and the plugin suspected. */
function safeModeBanner() {
  const mode = state.safeMode;
  if (!mode) return null;
  return h(
    "div",
    { class: "alert alert-error", role: "alert", "data-safe-mode": "" },
    h("strong", {}, "Safe mode: "),
    `every plugin is off for this run (${mode.reason}). `,
    mode.suspect ? `The plugin suspected of breaking the start is ${mode.suspect}. ` : "",
    opens(apiOf("/admin/plugins")) ? link("/admin/plugins", "Remove or fix it under Plugins") : "An admin can remove it",
    ", then restart xcore without --safe.",
  );
}

function activeNav(pathname) {
  const path = pathname.replace(/\/+$/, "") || "/admin";
  if (path === "/admin" || path === HOME || path.startsWith("/admin/apps/")) return path;
  const hit = NAV.map(([href]) => href).filter((href) => href !== "/admin" && path.startsWith(href));
  return hit.sort((a, b) => b.length - a.length)[0] || path;
}

function notFound(main) {
  main.append(
    h("h1", {}, "Page not found"),
    h("p", {}, "There is no page at this address. "),
    link(HOME, "Go to the home page"),
  );
  document.title = "Not found · xcore";
}

function forbidden(main, requirement) {
  main.append(
    h("h1", {}, "No access"),
    h("p", {}, `This page is for ${requirement || "other accounts"}. Your pages are on `,
      link(HOME, "the home page"), ", and your account's settings in ", link("/admin/account", "My account"), "."),
  );
  document.title = "No access · xcore";
}

async function render() {
  const seq = ++state.renderSeq;
  if (state.cleanup) {
    try { state.cleanup(); } catch { /* a view's cleanup must not stop navigation */ }
    state.cleanup = null;
  }
  const root = document.getElementById("app");
  const found = match(location.pathname);
  if (!found?.options.public && (!state.me || !state.access)) {
    try {
      await loadMe();
    } catch (err) {
      clear(root).append(h("main", { id: "main", class: "main bare", tabindex: "-1" },
        h("h1", {}, "xcore is not answering"), h("p", { role: "alert" }, errorMessage(err)),
        button("Try again", { onclick: () => render() })));
      return;
    }
    if (seq !== state.renderSeq) return;
    if (!state.me) {
      const setup = await api.get("/api/setup").catch(() => null);
      if (setup?.required) {
        navigate("/admin/setup", { replace: true });
        return;
      }
      goToLogin();
      return;
    }
  }
  if (seq !== state.renderSeq) return;
  const main = h("main", { id: "main", class: "main", tabindex: "-1" });
  clear(root);
  if (found?.options.bare || !state.me) {
    main.classList.add("bare");
    root.append(main);
  } else {
    const { nav, header, banner } = layout(state.me, activeNav(location.pathname));
    root.append(nav, h("div", { class: "content" }, header, banner, main));
  }
  if (!found) {
    notFound(main);
    return;
  }
  if (!opens(found.options.api)) {
    if (location.pathname.replace(/\/+$/, "") === "/admin") {
      navigate(HOME, { replace: true }); // a user without admin rights: their app is the home page
      return;
    }
    forbidden(main, state.access?.[found.options.api]?.requirement);
    return;
  }
  try {
    const module = await import(`./pages/${found.page}.js`);
    if (seq !== state.renderSeq) return;
    document.title = `${module.title} · xcore`;
    const ctx = {
      main,
      params: found.params,
      query: new URLSearchParams(location.search),
      me: state.me,
      navigate,
      refreshMe: loadMe,
      setMe: (me) => { state.me = me; state.access = null; },
      pages: () => state.pages,
      loadPages,
      opens,
    };
    const cleanup = await module.render(ctx);
    if (typeof cleanup === "function") {
      if (seq === state.renderSeq) state.cleanup = cleanup;
      else cleanup();
    }
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) return; // on the way to the login page
    main.append(h("div", { class: "alert alert-error", role: "alert" }, `This page failed to load: ${errorMessage(err)}`));
  }
  if (seq === state.renderSeq && document.activeElement === document.body) main.focus({ preventScroll: true });
}

function onClick(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
    return;
  }
  const anchor = event.target.closest("a[href]");
  if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
  const url = new URL(anchor.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/admin")) return;
  if (url.pathname.startsWith("/admin/static/")) return;
  event.preventDefault();
  if (url.pathname + url.search === currentPath()) return;
  navigate(url.pathname + url.search);
  document.getElementById("main")?.focus({ preventScroll: true });
}

async function start() {
  api.setUnauthenticatedHandler(goToLogin);
  document.addEventListener("click", onClick);
  window.addEventListener("popstate", () => render());
  // The desktop window opens /admin/home#desktop=<one-time token>: sign in with it, then drop it from the URL.
  const desktop = /^#desktop=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (desktop) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      await api.desktopLogin(desktop[1]);
    } catch {
      // an expired or used token: the normal login page follows
    }
  }
  api.scheduleRefresh();
  await render();
}

start();
