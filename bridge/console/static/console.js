// The console: the token, the views (#live, #history, #call=ID), polling, errors.
"use strict";

const POLL_MS = 1000;
const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);

const state = {
  view: null,
  live: [],
  liveFetchedAt: 0,
  cursors: [null], // history: the cursor of each page seen, newest first
  page: 0,
  next: null,
  timer: 0,
  busy: false,
};
let callPage;

function showAlert(message, kind = "error") {
  const box = $("alert");
  box.textContent = message;
  box.className = `alert ${kind}`;
  box.hidden = false;
}

function clearAlert() {
  $("alert").hidden = true;
}

// An error while talking to the API: a refused token asks for it again, anything else
// is shown until the next request that works.
function handle(err) {
  if (err instanceof AuthError) {
    showLogin(err.message);
    return;
  }
  showAlert(err.message || String(err));
  $("updated").textContent = "Not updated";
}

function showLogin(why) {
  for (const view of ["live", "history", "call"]) $(`view-${view}`).hidden = true;
  callPage.close();
  $("login").hidden = false;
  $("sign-out").hidden = true;
  $("login-why").textContent = why || "Enter the bridge's ADMIN_TOKEN to see its calls.";
  $("login-why").classList.toggle("refused", Boolean(why));
  clearAlert();
  $("token").focus();
}

function route() {
  const hash = location.hash.replace(/^#/, "");
  if (hash.startsWith("call=")) return { view: "call", id: decodeURIComponent(hash.slice(5)) };
  return { view: hash === "history" ? "history" : "live" };
}

async function show() {
  if (!api.token()) {
    showLogin();
    return;
  }
  const where = route();
  $("login").hidden = true;
  $("sign-out").hidden = false;
  for (const view of ["live", "history", "call"]) $(`view-${view}`).hidden = view !== where.view;
  $("nav-live").classList.toggle("active", where.view === "live");
  $("nav-history").classList.toggle("active", where.view === "history");
  if (where.view !== "call") callPage.close();
  state.view = where.view;
  if (where.view === "call") await run(() => callPage.open(where.id));
  if (where.view === "history") await run(loadHistory);
  await run(loadLive);
}

// Runs one API round; success clears a standing error.
async function run(task) {
  try {
    await task();
    clearAlert();
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    handle(err);
  }
}

async function poll() {
  clearTimeout(state.timer);
  if (api.token() && !state.busy) {
    state.busy = true;
    try {
      await run(async () => {
        await loadLive();
        if (state.view === "call" && callPage.live) await callPage.refresh();
      });
    } finally {
      state.busy = false;
    }
  }
  state.timer = setTimeout(poll, POLL_MS);
}

async function loadLive() {
  const body = await api.json(`/calls?state=live&limit=100`);
  state.live = body.calls;
  state.liveFetchedAt = performance.now();
  renderLive();
}

function renderLive() {
  const rows = state.live.map((call) => {
    const hangup = el("button", { class: "btn danger small", type: "button" }, "Hang up");
    hangup.addEventListener("click", (event) => {
      event.stopPropagation();
      hangUp(call.id, hangup, () => run(loadLive));
    });
    const row = el(
      "tr",
      { class: "link", dataset: { id: call.id }, tabindex: "0" },
      el("td", {}, fmt.text(call.from)),
      el("td", {}, fmt.text(call.to)),
      el("td", {}, fmt.text(call.agent)),
      el("td", {}, fmt.text(call.leg)),
      el("td", {}, el("span", { class: "pill", dataset: { state: call.state } }, call.state)),
      el("td", { class: "num duration", dataset: { id: call.id } }, ""),
      el("td", { class: "num" }, fmt.text(call.turns)),
      el("td", { class: "num" }, fmt.ms(call.latency_ms)),
      el("td", { class: "num" }, call.state === "live" ? hangup : ""),
    );
    linkRow(row, call.id);
    return row;
  });
  // A hang-up waiting for its confirmation is not swept away by the next poll.
  if (!$("live-rows").querySelector("[data-confirm]")) $("live-rows").replaceChildren(...rows);
  $("live-empty").hidden = rows.length > 0;
  $("live-count").textContent = String(state.live.length);
  tickDurations();
}

function tickDurations() {
  for (const call of state.live) {
    const cell = $("live-rows").querySelector(`td.duration[data-id="${CSS.escape(call.id)}"]`);
    if (cell) cell.textContent = fmt.duration(callDuration(call, state.liveFetchedAt));
  }
}

function linkRow(row, id) {
  const open = () => (location.hash = `call=${encodeURIComponent(id)}`);
  row.addEventListener("click", open);
  row.addEventListener("keydown", (event) => event.key === "Enter" && open());
}

// The latest history request: an answer to an earlier one (a page clicked past, filters
// changed meanwhile) is dropped rather than drawn over it.
let historyRequest = 0;

function setPaging(enabled) {
  $("newer").disabled = !enabled || state.page === 0;
  $("older").disabled = !enabled || !state.next;
}

async function loadHistory() {
  const mine = ++historyRequest;
  // Paging reads state.next, which only this answer sets: no second click meanwhile.
  setPaging(false);
  try {
    await drawHistory(mine);
  } finally {
    if (mine === historyRequest) setPaging(true);
  }
}

async function drawHistory(mine) {
  const params = new URLSearchParams({ state: "ended", limit: String(PAGE_SIZE) });
  const agent = $("filter-agent").value.trim();
  const leg = $("filter-leg").value.trim();
  if (agent) params.set("agent", agent);
  if (leg) params.set("leg", leg);
  const cursor = state.cursors[state.page];
  if (cursor) params.set("before", cursor);
  const body = await api.json(`/calls?${params}`);
  if (mine !== historyRequest) return;
  state.next = body.next;
  const rows = body.calls.map((call) => {
    const row = el(
      "tr",
      { class: "link", dataset: { id: call.id }, tabindex: "0" },
      el("td", {}, fmt.when(call.started_at)),
      el("td", {}, fmt.text(call.from)),
      el("td", {}, fmt.text(call.to)),
      el("td", {}, fmt.text(call.agent)),
      el("td", {}, fmt.text(call.leg)),
      el("td", { class: "num" }, fmt.duration(callDuration(call, 0))),
      el("td", { class: "num" }, fmt.text(call.turns)),
      el("td", { class: "num" }, fmt.text(call.barge_ins)),
      el("td", { class: "num" }, fmt.ms(call.latency_ms)),
      el("td", {}, fmt.text(call.end_reason)),
      el("td", {}, call.has_recording ? el("span", { class: "rec-dot", title: "Recorded" }, "●") : ""),
    );
    linkRow(row, call.id);
    return row;
  });
  $("history-rows").replaceChildren(...rows);
  $("history-empty").hidden = rows.length > 0;
  $("page-no").textContent = `Page ${state.page + 1}`;
}

function resetHangUp(button) {
  clearTimeout(button._reset);
  delete button.dataset.confirm;
  button.disabled = false;
  button.textContent = "Hang up";
}

// The first click asks for a confirmation; the second ends the call.
async function hangUp(id, button, after) {
  if (!button.dataset.confirm) {
    button.dataset.confirm = "1";
    button.textContent = "Confirm hang-up";
    button._reset = setTimeout(() => resetHangUp(button), 5000);
    return;
  }
  clearTimeout(button._reset);
  button.disabled = true;
  button.textContent = "Ending…";
  delete button.dataset.confirm;
  try {
    await api.fetch(`/calls/${encodeURIComponent(id)}/hangup`, { method: "POST" });
    showAlert("The call is being ended.", "info");
  } catch (err) {
    resetHangUp(button);
    if (err.status === 409 || err.status === 404) showAlert("That call has already ended.", "info");
    else handle(err);
  }
  await after();
}

function init() {
  callPage = new CallPage();
  api.takeTokenFromHash();
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setToken($("token").value.trim());
    $("token").value = "";
    show();
  });
  $("sign-out").addEventListener("click", () => {
    api.setToken(null);
    showLogin();
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.cursors = [null];
    state.page = 0;
    run(loadHistory);
  });
  $("older").addEventListener("click", () => {
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    run(loadHistory);
  });
  $("newer").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    run(loadHistory);
  });
  window.addEventListener("hashchange", () => {
    api.takeTokenFromHash();
    show();
  });
  setInterval(tickDurations, 250);
  show().then(poll);
}

document.addEventListener("DOMContentLoaded", init);
