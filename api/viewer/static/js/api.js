// The REST API as the pages use it: JSON in, the envelope's data out, its msg as the error.
import { authHeaders } from "./auth.js";

export class ApiError extends Error {
  constructor(status, message, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "Keel cannot be reached; check the connection and try again.");
  }
  const envelope = await response.json().catch(() => null);
  if (!response.ok || envelope?.code !== 0) {
    throw new ApiError(response.status, envelope?.msg || `HTTP ${response.status}`, envelope?.data);
  }
  return envelope.data;
}
