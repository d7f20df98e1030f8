// The admin API as the console uses it: the token, authorised fetches, formatting.
"use strict";

const TOKEN_KEY = "bridge-admin-token";

class AuthError extends Error {}

const api = {
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },

  setToken(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },

  // A `#token=…` in the address is taken once, then removed from it.
  takeTokenFromHash() {
    const match = location.hash.match(/(?:^#|&)token=([^&]*)/);
    if (!match) return;
    this.setToken(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search + "#live");
  },

  // fetch with the bearer token. 401 raises AuthError (the token is dropped); any other
  // failure raises an Error whose message says what went wrong, for the page to show.
  async fetch(path, options = {}) {
    const token = this.token();
    if (!token) throw new AuthError("An admin token is needed.");
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch (err) {
      throw new Error("Cannot reach the server.");
    }
    if (response.status === 401) {
      this.setToken(null);
      throw new AuthError("The admin token was refused.");
    }
    if (!response.ok) {
      const error = new Error(`${options.method || "GET"} ${path}: ${await describe(response)}`);
      error.status = response.status;
      throw error;
    }
    return response;
  },

  async json(path, options) {
    return (await this.fetch(path, options)).json();
  },
};

async function describe(response) {
  let text = "";
  try {
    text = (await response.text()).trim();
    const body = JSON.parse(text);
    text = body.error || body.detail || body.message || text;
  } catch (err) {
    // Not JSON: the text as it is.
  }
  return `${response.status} ${response.statusText}${text ? ` (${String(text).slice(0, 200)})` : ""}`;
}

const fmt = {
  duration(seconds) {
    if (seconds == null || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  },

  offset(seconds) {
    if (seconds == null) return "";
    const m = Math.floor(seconds / 60);
    return `${m}:${(seconds - m * 60).toFixed(1).padStart(4, "0")}`;
  },

  ms(value) {
    return value == null ? "–" : `${Math.round(value)} ms`;
  },

  when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    if (isNaN(date)) return iso;
    const sameDay = date.toDateString() === new Date().toDateString();
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    if (sameDay) return time;
    return `${date.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
  },

  text(value) {
    return value == null || value === "" ? "–" : String(value);
  },
};

// Seconds a call has lasted: the server's figure, plus the time since it was fetched
// while the call is live (so the duration ticks between polls).
function callDuration(call, fetchedAt) {
  if (call.duration_s != null) {
    const extra = call.state === "live" ? (performance.now() - fetchedAt) / 1000 : 0;
    return call.duration_s + extra;
  }
  if (!call.started_at) return null;
  const end = call.ended_at ? Date.parse(call.ended_at) : Date.now();
  return (end - Date.parse(call.started_at)) / 1000;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child != null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
