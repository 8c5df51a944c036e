// xcore.js: the client SDK of plugin pages. A page imports it as `/admin/static/xcore.js` (or uses `ctx.xcore`,
// the same module) and nothing else of the app: these exports are the whole contract, documented in
// plugins/README.md ("The page SDK"), and they stay stable. Everything here runs under the app's
// Content-Security-Policy (`script-src 'self'`): no inline script, no eval, no HTML from strings.

import * as http from "./api.js";
import { currentUser, navigate as go } from "./app.js";
import * as dom from "./dom.js";

export { ApiError } from "./api.js";

/**
 * api calls xcore's JSON API (a plugin's routes under `ctx.plugin.prefix`, or the core's) on the app's own origin
 * with the user's session: the cookie, the CSRF token of unsafe methods and a silent refresh are handled. Each
 * call resolves to the parsed JSON body (null for 204) and rejects with an ApiError {status, problem, message}.
 */
export const api = Object.freeze({
  get: (path, query) => http.get(path, query),
  post: (path, json) => http.post(path, json),
  put: (path, json) => http.put(path, json),
  patch: (path, json) => http.patch(path, json),
  delete: (path) => http.del(path),
});

/** user is the logged-in user: {id, username, roles, permissions} (a copy; changing it changes nothing). */
export function user() {
  const me = currentUser();
  if (!me) return null;
  return Object.freeze({
    id: me.id,
    username: me.username,
    roles: Object.freeze([...(me.roles || [])]),
    permissions: Object.freeze([...(me.permissions || [])]),
  });
}

/** can is true when the logged-in user holds `permission` (a superadmin holds every permission). It only decides
 * what a page offers: the server judges every request on its own. */
export function can(permission) {
  const me = currentUser();
  if (!me) return false;
  return (me.roles || []).includes("superadmin") || (me.permissions || []).includes(permission);
}

/** navigate shows another page of the app (`/admin/...`, e.g. another page of the plugin) without a reload. */
export function navigate(path) {
  go(String(path));
}

/** notice shows a short message as a toast, read out by screen readers; kind is "info" (default) or "error". */
export function notice(message, { kind = "info" } = {}) {
  dom.toast(String(message), kind === "error" ? "error" : "info");
}

// Properties whose value the browser would parse as HTML or run as script: h refuses them.
const HTML_PROPS = new Set(["innerHTML", "outerHTML", "srcdoc"]);

/**
 * h builds an element: h(tag, attrs, ...children). Strings among the children become text nodes, never HTML;
 * children may also be nodes, numbers, arrays, or null/false (skipped). attrs: `class`, `text`, `dataset`,
 * `style` (an object: the policy refuses style strings), event listeners as functions (`onclick: fn`), and
 * other attributes as strings or booleans. A listener given as a string, a `<script>`, or an HTML property
 * throws a TypeError saying so, rather than being refused silently by the browser's policy.
 */
export function h(tag, attrs = {}, ...children) {
  if (String(tag).toLowerCase() === "script") {
    throw new TypeError("h('script'): a page cannot add scripts; import modules from your plugin's static/ instead");
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (/^on/i.test(key) && typeof value !== "function") {
      throw new TypeError(`h: ${key} must be a function (${key}: () => ...), never a string of script`);
    }
    if (HTML_PROPS.has(key)) throw new TypeError(`h: ${key} is not allowed; pass text and nodes as children`);
    if (key === "style" && typeof value !== "object") {
      throw new TypeError("h: style must be an object ({color: 'red'}); the policy refuses style strings");
    }
  }
  return dom.h(tag, attrs, ...children);
}

/** text is a text node holding `value` as text. */
export const text = dom.text;

/** clear empties an element and returns it. */
export const clear = dom.clear;
