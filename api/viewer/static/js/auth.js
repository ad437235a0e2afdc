// Credentials, all in one place: how the pages sign in, where the token lives and how
// requests and the WebSocket carry it. The token stays in this tab's sessionStorage
// (never a cookie, so no CSRF) and goes in the Authorization header; signing out forgets it.

const KEY = "keel.credential";
export const ROLES = ["viewer", "editor", "admin", "owner"];

export function credential() {
  return sessionStorage.getItem(KEY);
}

export function authHeaders() {
  const token = credential();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

async function envelope(response) {
  const body = await response.json().catch(() => null);
  return { status: response.status, ok: response.ok && body?.code === 0, msg: body?.msg, data: body?.data };
}

/** Email and password for an access token (POST /Auth/token, a form). */
export async function signInWithPassword(email, password) {
  const response = await fetch("/api/v1/Auth/token", {
    method: "POST",
    body: new URLSearchParams({ username: email, password }),
  });
  const answer = await envelope(response);
  if (answer.status === 404) throw new Error("This server has no sign-in with a password; use an API key.");
  if (!answer.ok) throw new Error(answer.msg || `Sign-in failed (HTTP ${answer.status}).`);
  sessionStorage.setItem(KEY, answer.data.access_token);
}

/** An API key is used directly as the bearer token; it is kept only if the server accepts it. */
export async function signInWithApiKey(key) {
  sessionStorage.setItem(KEY, key.trim());
  const who = await whoAmI();
  if (who.state === "refused") {
    signOut();
    throw new Error(who.msg);
  }
}

/**
 * Who the page acts as: {state: "signed-in", role, name}, {state: "open"} (the server has no
 * access control, so everything is allowed), {state: "signed-out"} or {state: "refused", msg}.
 */
export async function whoAmI() {
  let response;
  try {
    response = await fetch("/api/v1/Auth/me", { headers: authHeaders() });
  } catch {
    return { state: "refused", msg: "Keel cannot be reached; check the connection and reload." };
  }
  const answer = await envelope(response);
  if (answer.status === 404) return { state: "open", role: null, name: null };
  if (answer.ok) {
    return { state: "signed-in", role: answer.data.role, name: answer.data.principal?.name ?? "" };
  }
  if (!credential()) return { state: "signed-out" };
  return { state: "refused", msg: `Your credential was refused: ${answer.msg || `HTTP ${answer.status}`}` };
}

/** A role (null: open server) may do what needs `needed`. */
export function allows(role, needed) {
  return role === null || ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/** The query a WebSocket needs: a single-use ticket, since browsers cannot set its headers. */
export async function webSocketQuery() {
  if (!credential()) return "";
  const response = await fetch("/api/v1/Auth/ws-ticket", { method: "POST", headers: authHeaders() });
  const answer = await envelope(response);
  if (answer.status === 404) return "";
  if (!answer.ok) throw new Error(answer.msg || `no WebSocket ticket (HTTP ${answer.status})`);
  return `ticket=${encodeURIComponent(answer.data.ticket)}`;
}
