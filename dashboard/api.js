// The service's HTTP API as seen from the page: JSON calls with the session's CSRF token,
// one place that notices an expired session (any 401) and tells the app.

export const API = "/api/v1";
const TIMEOUT_MS = 10000;

let csrfToken = "";
let onExpired = () => {};

/** An answer other than 2xx; status 0 means the network failed. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function setCsrfToken(token) {
  csrfToken = token || "";
}

export function csrfHeaders(extra = {}) {
  return csrfToken ? { ...extra, "X-CSRF-Token": csrfToken } : { ...extra };
}

/** Call fn() once when an API call answers 401 (the session is gone). */
export function onSessionExpired(fn) {
  onExpired = fn;
}

/** Report a 401 met elsewhere (WHEP, snapshots, event streams). */
export function sessionExpired() {
  onExpired();
}

async function detailOf(res) {
  try {
    const body = await res.json();
    return body.detail || body.title || "";
  } catch {
    return "";
  }
}

/** fetch with a timeout; a 401 ends the session unless quiet401 (used by login/me). */
export async function request(path, { method = "GET", body, headers = {}, quiet401 = false, raw = false } = {}) {
  const url = path.startsWith("/") && !path.startsWith(API) && !path.startsWith("/readyz") ? API + path : path;
  const init = { method, cache: "no-store", credentials: "same-origin", headers: { ...headers } };
  if (method !== "GET" && method !== "HEAD") Object.assign(init.headers, csrfHeaders());
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  init.signal = ctrl.signal;
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, err.name === "AbortError" ? "timeout" : String(err));
  } finally {
    clearTimeout(timer);
  }
  if (res.status === 401 && !quiet401) {
    onExpired();
    throw new ApiError(401, await detailOf(res));
  }
  if (raw) return res;
  if (!res.ok) {
    const err = new ApiError(res.status, await detailOf(res));
    err.retryAfter = Number(res.headers.get("Retry-After")) || 0;
    throw err;
  }
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

export const getJSON = (path, opts) => request(path, opts);
export const postJSON = (path, body, opts) => request(path, { ...opts, method: "POST", body });
export const putJSON = (path, body, opts) => request(path, { ...opts, method: "PUT", body });
