// The desktop's one way to the server: JSON requests with the session's CSRF token,
// the server's errors (OpenAI's and Ollama's formats) as ApiError, uploads with
// progress, and streams read as SSE events or NDJSON lines. Apps get this object
// as `api` in mount(); none of them calls fetch() directly.

const CSRF_COOKIE = "blackroad_csrf";
const CSRF_HEADER = "X-CSRF-Token";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** An error answer of the server, with its message and, for a bad field, the field. */
export class ApiError extends Error {
  constructor(status, message, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = param;
  }
}

/** The CSRF token of the session (from its readable cookie), or null without one. */
export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(value.join("="));
  }
  return null;
}

/** The message of an error body, in either API's format ({"error": {...}} or {"error": "..."}). */
export function errorOf(status, body) {
  const error = body && typeof body === "object" ? body.error ?? body.detail : null;
  if (error && typeof error === "object") {
    return new ApiError(status, error.message ?? JSON.stringify(error), error.param ?? null);
  }
  if (typeof error === "string") return new ApiError(status, error);
  return new ApiError(status, `the server answered ${status}`);
}

function headersFor(method, extra = {}) {
  const headers = { ...extra };
  const token = csrfToken();
  if (UNSAFE.has(method) && token) headers[CSRF_HEADER] = token;
  return headers;
}

async function send(method, path, { body, signal, headers = {} } = {}) {
  const json = body !== undefined && !(body instanceof FormData);
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    signal,
    headers: headersFor(method, json ? { "Content-Type": "application/json", ...headers } : headers),
    body: json ? JSON.stringify(body) : body,
  });
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      // not JSON: the status alone says what happened
    }
    throw errorOf(response.status, parsed);
  }
  return response;
}

async function jsonOf(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") ?? "";
  return type.includes("json") ? response.json() : response.text();
}

/** Lines of a streamed body, decoded as UTF-8 across chunk boundaries. */
async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const parts = pending.split("\n");
      pending = parts.pop();
      yield* parts;
    }
    pending += decoder.decode();
    if (pending) yield pending;
  } finally {
    reader.releaseLock();
  }
}

function failed(event) {
  // An error after the stream started arrives as an event of the stream's own protocol.
  return event && typeof event === "object" && "error" in event ? errorOf(500, event) : null;
}

export const api = {
  get: async (path, options) => jsonOf(await send("GET", path, options)),
  post: async (path, body, options) => jsonOf(await send("POST", path, { ...options, body })),
  put: async (path, body, options) => jsonOf(await send("PUT", path, { ...options, body })),
  patch: async (path, body, options) => jsonOf(await send("PATCH", path, { ...options, body })),
  delete: async (path, options) => jsonOf(await send("DELETE", path, options)),

  /** POST `body` and yield each SSE event's parsed data (OpenAI's streams) until [DONE]. */
  async *sse(path, body, { signal } = {}) {
    const response = await send("POST", path, { body, signal });
    for await (const line of lines(response)) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      const error = failed(event);
      if (error) throw error;
      yield event;
    }
  },

  /** GET an event stream and yield each named event as {event, data} (data parsed as JSON). */
  async *events(path, { signal } = {}) {
    const response = await send("GET", path, { signal, headers: { Accept: "text/event-stream" } });
    let event = "message";
    for await (const line of lines(response)) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) {
        yield { event, data: JSON.parse(line.slice(5).trim()) };
        event = "message";
      }
    }
  },

  /** `method` `path` and yield each NDJSON line parsed (Ollama's streams: pull, chat). */
  async *ndjson(path, body, { signal, method = "POST" } = {}) {
    const response = await send(method, path, { body, signal });
    for await (const line of lines(response)) {
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      const error = failed(event);
      if (error) throw error;
      yield event;
    }
  },

  /** POST a FormData (files) with upload progress: onProgress(sentBytes, totalBytes). */
  upload(path, form, onProgress = () => {}) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", path);
      for (const [name, value] of Object.entries(headersFor("POST"))) {
        request.setRequestHeader(name, value);
      }
      request.upload.onprogress = (event) => onProgress(event.loaded, event.total);
      request.onerror = () => reject(new ApiError(0, "the upload failed: no answer from the server"));
      request.onload = () => {
        let parsed = null;
        try {
          parsed = JSON.parse(request.responseText);
        } catch {
          // not JSON
        }
        if (request.status >= 200 && request.status < 300) resolve(parsed);
        else reject(errorOf(request.status, parsed));
      };
      request.send(form);
    });
  },

  /** The URL of a vendor file (from node_modules), or null when it is not installed. */
  async vendorUrl(name) {
    return (await manifest()).vendor[name] ?? null;
  },

  /** A front-end library's ES module (see vendorUrl), or null when it is not installed. */
  async vendor(name) {
    const url = await api.vendorUrl(name);
    return url ? import(url) : null;
  },
};

let manifestPromise = null;

/** What the server says the desktop has: its apps' modules and the installed vendor files. */
export function manifest() {
  manifestPromise ??= api.get("/desktop/manifest.json");
  return manifestPromise;
}
