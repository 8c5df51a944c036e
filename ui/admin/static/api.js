// The UI's only door to the server: the public JSON API, with the browser's cookie session.
//
// Sessions: login with `cookie: true` sets HttpOnly cookies, so scripts never see a token. Unsafe requests send
// the readable `xcore_csrf` cookie back as X-CSRF-Token (logout and refresh too); the server derives that token
// from the login, so it works for this session only. The access token is refreshed
// silently a minute before it expires; a request answered 401 tries one refresh, and when that fails too the
// app goes to the login page, remembering where the user was.

const CSRF_COOKIE = "xcore_csrf";
const EXPIRY_KEY = "xcore.session.expires";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** ApiError is a failed answer: `status`, and `problem` (the RFC 9457 document) when the server sent one. */
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super(problem?.detail || fallback || `the server answered ${status}`);
    this.status = status;
    this.problem = problem || null;
  }
}

let onUnauthenticated = () => {};
let refreshTimer = null;
let refreshing = null;

/** setUnauthenticatedHandler: what to do when the session is gone (the app sends the user to login). */
export function setUnauthenticatedHandler(fn) {
  onUnauthenticated = fn;
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) for (const item of value) params.append(key, String(item));
    else params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

async function send(method, path, { json, body, query, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  if (UNSAFE.has(method)) {
    const token = csrfToken();
    if (token) init.headers["X-CSRF-Token"] = token;
  }
  try {
    return await fetch(withQuery(path, query), init);
  } catch (err) {
    throw new ApiError(0, null, `cannot reach the xcore server (${err.message}); is it still running?`);
  }
}

/**
 * request sends one API call and returns the parsed body. Errors throw ApiError. A 401 on anything but the
 * session endpoints tries one silent refresh, then repeats the call once.
 */
export async function request(method, path, options = {}) {
  let response = await send(method, path, options);
  if (response.status === 401 && !path.startsWith("/api/auth/") && !options.noRefresh) {
    if (await refreshSession()) response = await send(method, path, options);
    if (response.status === 401) {
      const problem = await parse(response).catch(() => null);
      onUnauthenticated();
      throw new ApiError(401, typeof problem === "object" ? problem : null);
    }
  }
  const data = await parse(response).catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data && typeof data === "object" ? data : null);
  return data;
}

export const get = (path, query, options = {}) => request("GET", path, { ...options, query });
export const post = (path, json, options = {}) => request("POST", path, { ...options, json });
export const put = (path, json, options = {}) => request("PUT", path, { ...options, json });
export const patch = (path, json, options = {}) => request("PATCH", path, { ...options, json });
export const del = (path, query, options = {}) => request("DELETE", path, { ...options, query });

let policyRequest = null;

/** policy: what the server checks in account forms (GET /api/auth/policy, public): the password policy, the
 * username and role name rules, the 2FA code length. Forms show these and keep no copy of their own. Fetched once
 * per page load. */
export function policy() {
  policyRequest ||= get("/api/auth/policy").catch((err) => {
    policyRequest = null;
    throw err;
  });
  return policyRequest;
}

/**
 * upload sends a multipart form with progress events (fetch has none for uploads): onProgress(fraction 0..1).
 * Resolves to the parsed body; rejects with ApiError. A 401 triggers one refresh and one retry, as request().
 */
export function upload(path, formData, onProgress, retried = false) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Accept", "application/json");
    const token = csrfToken();
    if (token) xhr.setRequestHeader("X-CSRF-Token", token);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null, "the upload failed: cannot reach the server")));
    xhr.addEventListener("load", async () => {
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = null;
      }
      if (xhr.status === 401 && !retried && (await refreshSession())) {
        upload(path, formData, onProgress, true).then(resolve, reject);
        return;
      }
      if (xhr.status === 401) onUnauthenticated();
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.send(formData);
  });
}

/** startSession remembers when a new session's access token expires and schedules its silent refresh. */
export function startSession(session) {
  const expiresAt = Date.now() + session.expires_in * 1000;
  sessionStorage.setItem(EXPIRY_KEY, String(expiresAt));
  scheduleRefresh();
}

/** scheduleRefresh sets the timer that refreshes the session a minute before the access token expires. */
export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const expiresAt = Number(sessionStorage.getItem(EXPIRY_KEY) || 0);
  if (!expiresAt) return;
  const lead = Math.min(60_000, (expiresAt - Date.now()) / 4);
  const delay = Math.max(1_000, expiresAt - Date.now() - lead);
  refreshTimer = setTimeout(() => refreshSession(), delay);
}

/** refreshSession exchanges the refresh cookie for new tokens; resolves to whether that worked. One at a time. */
export function refreshSession() {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const response = await send("POST", "/api/auth/refresh", {});
        if (!response.ok) {
          sessionStorage.removeItem(EXPIRY_KEY);
          return false;
        }
        startSession(await response.json());
        return true;
      } catch {
        return false;
      } finally {
        setTimeout(() => { refreshing = null; }, 0);
      }
    })();
  }
  return refreshing;
}

/** login signs in with a cookie session. Throws ApiError (a 401 with problem.totp_required asks for a code). */
export async function login(username, password, { totp, recoveryCode } = {}) {
  const body = { username, password, cookie: true };
  if (totp) body.totp = totp;
  if (recoveryCode) body.recovery_code = recoveryCode;
  const session = await request("POST", "/api/auth/login", { json: body });
  startSession(session);
  return session;
}

/** desktopLogin signs in with the desktop window's one-time token. */
export async function desktopLogin(token) {
  const session = await request("POST", "/api/auth/desktop", { json: { token } });
  startSession(session);
  return session;
}

/** logout ends the session on the server and forgets it here. */
export async function logout() {
  clearTimeout(refreshTimer);
  sessionStorage.removeItem(EXPIRY_KEY);
  try {
    await send("POST", "/api/auth/logout", {});
  } catch {
    // the server is gone: the cookies will expire on their own
  }
}
