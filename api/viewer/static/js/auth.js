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
  if (!answer.ok) throw new Error(answer.msg || `Sign-in failed (HTTP ${answer.status}).`);
  sessionStorage.setItem(KEY, answer.data.access_token);
}

/** An API key is used directly as the bearer token; it is kept only if the server accepts it. */
export async function signInWithApiKey(key) {
  sessionStorage.setItem(KEY, key.trim());
  const who = await whoAmI();
  if (who.state !== "signed-in") {
    signOut();
    throw new Error(who.msg);
  }
}

/**
 * Who the page acts as: {state: "signed-in", role, name}, {state: "signed-out"},
 * {state: "refused", msg} (the credential was not accepted) or {state: "unreachable", msg}.
 */
export async function whoAmI() {
  if (!credential()) return { state: "signed-out" };
  let response;
  try {
    response = await fetch("/api/v1/Auth/me", { headers: authHeaders() });
  } catch {
    return { state: "unreachable", msg: "Keel cannot be reached; check the connection and reload." };
  }
  const answer = await envelope(response);
  if (answer.ok) {
    return { state: "signed-in", role: answer.data.role, name: answer.data.principal?.name ?? "" };
  }
  if (answer.status === 401) {
    return { state: "refused", msg: `Your credential was refused: ${answer.msg || "HTTP 401"}` };
  }
  return { state: "unreachable", msg: `Keel could not say who you are: ${answer.msg || `HTTP ${answer.status}`}` };
}

/** A role may do what needs `needed` (roles include the ones before them). */
export function allows(role, needed) {
  return ROLES.includes(role) && ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/**
 * The query a WebSocket needs: a single-use ticket, since browsers cannot set its headers.
 * Throws an Error whose `refused` is true when the credential is no longer accepted.
 */
export async function webSocketQuery() {
  const response = await fetch("/api/v1/Auth/ws-ticket", { method: "POST", headers: authHeaders() });
  const answer = await envelope(response);
  if (!answer.ok) {
    const failure = new Error(`Your credential was refused for the live stream: ${answer.msg || `HTTP ${answer.status}`}`);
    failure.refused = answer.status === 401 || answer.status === 403;
    throw failure;
  }
  return `ticket=${encodeURIComponent(answer.data.ticket)}`;
}
