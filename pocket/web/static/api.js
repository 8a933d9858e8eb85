// Pocket's JSON API, as the pages call it: one fetch per request, a timeout, and
// bodies written as JSON text so that amounts and ids go out exactly as typed
// (never through a JavaScript number, which would round them).

const TIMEOUT_MS = 15000;

/** No answer came (network down, timeout): the request may or may not have happened. */
export class NoAnswer extends Error {}

/** A number written into the JSON as the person typed it. */
class Raw {
  constructor(text) {
    this.text = text;
  }
}

/** A user id: a JSON integer when it is one, else the text (which the API refuses, saying why). */
export function integerOrText(text) {
  return /^[0-9]{1,19}$/.test(text) ? new Raw(text) : text;
}

/** A JSON object's text: strings as JSON strings, Raw values as written. */
export function jsonText(fields) {
  const members = Object.entries(fields).map(
    ([name, value]) =>
      `${JSON.stringify(name)}:${value instanceof Raw ? value.text : JSON.stringify(value)}`,
  );
  return `{${members.join(",")}}`;
}

/** A fresh Idempotency-Key (a random UUID, also where randomUUID is missing: plain http). */
export function newKey() {
  if (typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Sends one request; resolves to {status, ok, data} for any HTTP answer, and
 * rejects with NoAnswer when none came in time.
 */
export async function call(method, path, { token, body, key } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers["Idempotency-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method,
      headers,
      body,
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null; // Not JSON (a proxy's page, say): described by errorOf.
    }
    return { status: response.status, ok: response.ok, data };
  } catch (error) {
    const why = error.name === "AbortError" ? "no answer within 15 s" : "the server could not be reached";
    throw new NoAnswer(why);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The API's error ({code, message, fields, hold}) of an answer that is not a
 * success; hold: the hold as it really ended, which a hold_ended refusal tells.
 */
export function errorOf(result) {
  const error = result.data && result.data.error;
  if (error && typeof error.message === "string") {
    return { code: error.code, message: error.message, fields: error.fields || null, hold: error.hold || null };
  }
  return { code: null, message: `The server answered ${result.status}.`, fields: null, hold: null };
}

/** Whether an answer leaves it unknown if the request happened (resend it under the same key). */
export function outcomeUnknown(result) {
  const { code } = errorOf(result);
  return result.status >= 500 || code === "idempotency_key_in_flight";
}
