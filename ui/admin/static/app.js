// The admin UI's shell: the router, the page layout (navigation, account menu) and the session start.
//
// Each view is a module in pages/ exporting `title` and `render(ctx)`. ctx: { main, params, query, me,
// navigate(path), refreshMe() }. render may return a cleanup function (timers, listeners), called when the
// user leaves the view. Only the view's own content goes in `main`; every view has exactly one <h1>.

import * as api from "./api.js";
import { button, clear, errorMessage, h, link } from "./dom.js";

// Each page names the API it reads (`api`). The server says which of them its access rules open to the user
// (GET /api/me/access), and the app offers only those pages: it keeps no copy of the rules.
const ROUTES = [
  ["/admin/setup", "setup", { bare: true, public: true }],
  ["/admin/login", "login", { bare: true, public: true }],
  ["/admin", "dashboard", { api: "/api/admin/system" }],
  ["/admin/plugins", "plugins", { api: "/api/admin/plugins" }],
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
  ["/admin/plugins", "Plugins"],
  ["/admin/tasks", "Tasks"],
  ["/admin/users", "Users"],
  ["/admin/roles", "Roles"],
  ["/admin/access", "Access"],
  ["/admin/logs", "Logs"],
  ["/admin/audit", "Audit log"],
  ["/admin/backups", "Backups"],
];

const state = { me: null, access: null, cleanup: null, renderSeq: 0 };

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
    state.access = await api.get("/api/me/access", { path: PAGE_APIS });
  } catch (err) {
    state.me = null;
    // 401: no session. 503 before the first account exists: the server asks for setup first.
    if (err.status !== 401 && !(err.status === 503 && /setup/.test(err.message))) throw err;
  }
  return state.me;
}

function layout(me, active) {
  const items = NAV.filter(([href]) => opens(apiOf(href)));
  const nav = h(
    "nav",
    { class: "sidebar", "aria-label": "Main" },
    h("p", { class: "brand" }, h("a", { href: "/admin" }, "xcore")),
    items.length
      ? h(
        "ul",
        {},
        items.map(([href, text]) =>
          h("li", {}, link(href, text, { "aria-current": active === href ? "page" : null }))),
      )
      : h("ul", {}, h("li", {}, link("/admin/account", "My account", {
        "aria-current": active === "/admin/account" ? "page" : null,
      }))),
  );
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
        navigate("/admin/login", { replace: true });
      },
    }),
  );
  const banner = me.totp_required && !me.totp_enabled
    ? h(
      "div",
      { class: "alert alert-warn", role: "note" },
      "Your role requires two-factor login. ",
      link("/admin/account", "Turn it on in My account"),
      ".",
    )
    : null;
  return { nav, header: h("header", { class: "topbar" }, account), banner };
}

function activeNav(pathname) {
  const path = pathname.replace(/\/+$/, "") || "/admin";
  if (path === "/admin") return "/admin";
  const hit = NAV.map(([href]) => href).filter((href) => href !== "/admin" && path.startsWith(href));
  return hit.sort((a, b) => b.length - a.length)[0] || path;
}

function notFound(main) {
  main.append(
    h("h1", {}, "Page not found"),
    h("p", {}, "There is no admin page at this address. "),
    link("/admin", "Go to the dashboard"),
  );
  document.title = "Not found · xcore";
}

function forbidden(main, requirement) {
  main.append(
    h("h1", {}, "No access"),
    h("p", {}, `This page is for ${requirement || "other accounts"}. Your account can use `,
      link("/admin/account", "My account"), "."),
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
      navigate("/admin/account", { replace: true });
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
  // The desktop window opens /admin/#desktop=<one-time token>: sign in with it, then drop it from the URL.
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
