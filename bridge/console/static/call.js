// One call's page (#call=ID): its facts, its recording with a waveform, its timeline.
"use strict";

const KIND_LABELS = {
  caller: "Caller",
  agent: "Agent",
  barge_in: "Barge-in",
  tool_call: "Tool call",
  dtmf: "Keypad",
  reconnect: "Reconnect",
};

class CallPage {
  constructor() {
    this.id = null;
    this.call = null;
    this.recordingFor = null;
    this.audioUrl = null;
    this.audio = document.getElementById("audio");
    this.waveform = new Waveform(
      document.getElementById("waveform"), document.getElementById("cursor"), this.audio,
    );
    this.hangup = document.getElementById("call-hangup");
    this.hangup.addEventListener("click", () => hangUp(this.id, this.hangup, () => run(() => this.refresh())));
  }

  open(id) {
    if (id !== this.id) {
      this.id = id;
      this.call = null;
      this.dropRecording();
      document.getElementById("call-title").textContent = "Call";
      document.getElementById("facts").replaceChildren();
      document.getElementById("timeline").replaceChildren();
      document.getElementById("rec-none").textContent = "Loading…";
      resetHangUp(this.hangup);
    }
    return this.refresh();
  }

  close() {
    this.audio.pause();
  }

  // Fetches the call again (the console polls this while the call is live).
  async refresh() {
    const id = this.id;
    let call;
    try {
      call = await api.json(`/calls/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status === 404) {
        document.getElementById("call-title").textContent = "No such call";
        document.getElementById("rec-none").textContent = "";
        return;
      }
      throw err;
    }
    if (id !== this.id) return;
    this.call = call;
    this.fetchedAt = performance.now();
    this.render();
    if (call.state === "ended" && this.recordingFor !== id) await this.loadRecording(id);
    else if (call.state !== "ended") {
      document.getElementById("rec-none").textContent = "The recording is ready when the call ends.";
    }
  }

  get live() {
    return this.call != null && this.call.state !== "ended";
  }

  render() {
    const call = this.call;
    document.getElementById("call-title").textContent = `Call ${call.from || ""} → ${call.to || ""}`;
    const state = document.getElementById("call-state");
    state.textContent = call.state;
    state.dataset.state = call.state;
    this.hangup.hidden = call.state !== "live";
    this.renderFacts();
    this.renderTimeline(call.timeline || []);
  }

  renderFacts() {
    const call = this.call;
    const usage = call.usage || {};
    const facts = [
      ["Id", call.id],
      ["Agent", call.agent],
      ["Leg", `${fmt.text(call.leg)} · ${fmt.text(call.direction)}`],
      ["Started", fmt.when(call.started_at)],
      ["Answered", fmt.when(call.answered_at)],
      ["Ended", fmt.when(call.ended_at)],
      ["Duration", fmt.duration(callDuration(call, this.fetchedAt))],
      ["End reason", call.end_reason],
      ["Turns", call.turns],
      ["Barge-ins", call.barge_ins],
      ["Latency", fmt.ms(call.latency_ms)],
      ["Tool calls", call.tool_calls],
      ["Reconnects", call.reconnects],
      ["Keypad", Array.isArray(call.dtmf) ? call.dtmf.join(" ") : call.dtmf],
      ["Tokens", usage.total_tokens],
    ];
    document.getElementById("facts").replaceChildren(
      ...facts.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, fmt.text(value)))),
    );
  }

  renderTimeline(events) {
    const list = document.getElementById("timeline");
    list.replaceChildren(...events.map((event) => timelineItem(event)));
    document.getElementById("timeline-empty").hidden = events.length > 0;
  }

  async loadRecording(id) {
    this.recordingFor = id;
    const none = document.getElementById("rec-none");
    let bytes;
    try {
      const response = await api.fetch(`/calls/${encodeURIComponent(id)}/recording`);
      bytes = await response.arrayBuffer();
    } catch (err) {
      if (err.status === 404) {
        none.textContent = "No recording of this call.";
        return;
      }
      this.recordingFor = null; // try again on the next visit
      throw err;
    }
    if (id !== this.id) return;
    this.audioUrl = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
    this.audio.src = this.audioUrl;
    document.getElementById("rec").hidden = false;
    none.textContent = "";
    try {
      const buffer = await this.waveform.load(bytes);
      document.getElementById("rec-info").textContent =
        `${fmt.duration(buffer.duration)} · ${buffer.numberOfChannels === 2 ? "stereo" : "mono"}`;
    } catch (err) {
      none.textContent = `The recording could not be decoded (${err.message || err}).`;
    }
  }

  dropRecording() {
    this.audio.pause();
    this.audio.removeAttribute("src");
    this.audio.load();
    if (this.audioUrl) URL.revokeObjectURL(this.audioUrl);
    this.audioUrl = null;
    this.recordingFor = null;
    this.waveform.clear();
    document.getElementById("rec").hidden = true;
    document.getElementById("rec-info").textContent = "";
  }
}

function timelineItem(event) {
  const kind = KIND_LABELS[event.kind] ? event.kind : "other";
  const item = el("li", { class: `event ${kind}`, dataset: { kind: event.kind } });
  item.append(
    el("span", { class: "at" }, fmt.offset(event.t)),
    el("span", { class: `tag ${kind}` }, KIND_LABELS[event.kind] || event.kind),
  );
  const body = el("div", { class: "body" });
  if (event.text) body.append(el("p", { class: "said" }, event.text));
  const notes = [];
  if (event.truncated) notes.push(el("span", { class: "note cut" }, "cut off by a barge-in"));
  if (event.latency_ms != null) {
    notes.push(el("span", { class: "note latency" }, `${Math.round(event.latency_ms)} ms`));
  }
  for (const [key, value] of Object.entries(event.detail || {})) {
    if (value == null || typeof value === "object") continue;
    notes.push(el("span", { class: "note" }, `${key.replace(/_/g, " ")}: ${value}`));
  }
  if (notes.length) body.append(el("div", { class: "notes" }, notes));
  if (event.truncated) item.classList.add("truncated");
  item.append(body);
  return item;
}
