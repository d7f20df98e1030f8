// The softphone page: microphone → Socket.IO → the bridge's Call → the agent, and back.
//
// Event API (see bridge/softphone/protocol.py): we send audio {data, meta_info}, text,
// mark, clear and hangup; the bridge sends status, audio, mark, clear, text and error.
"use strict";

(() => {
  const RATES = [24000, 48000, 16000];
  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("state"), call: $("call"), hangup: $("hangup"), mute: $("mute"),
    agent: $("agent"), agentName: $("agent-name"), token: $("token"), tokenLabel: $("token-label"),
    alert: $("alert"), transcript: $("transcript"), empty: $("transcript-empty"),
    say: $("say"), sayText: $("say-text"), saySend: $("say-send"),
    session: $("session"), rate: $("rate"), played: $("played"),
    micLevel: $("mic-level"), agentLevel: $("agent-level"),
  };

  let config = null;
  let call = null; // the live call: {socket, context, stream, capture, playback, ...}

  // ------------------------------------------------------------------ UI helpers

  function setState(state, label) {
    ui.state.dataset.state = state;
    ui.state.textContent = label;
  }

  function showAlert(message, kind = "error") {
    ui.alert.textContent = message;
    ui.alert.className = kind === "info" ? "alert info" : "alert";
    ui.alert.hidden = false;
  }

  function hideAlert() {
    ui.alert.hidden = true;
  }

  function setInCall(inCall) {
    ui.call.disabled = inCall;
    ui.hangup.disabled = !inCall;
    ui.mute.disabled = !inCall;
    ui.sayText.disabled = !inCall;
    ui.saySend.disabled = !inCall;
    ui.agent.disabled = inCall;
    ui.agentName.disabled = inCall;
    ui.token.disabled = inCall;
    if (!inCall) {
      ui.mute.setAttribute("aria-pressed", "false");
      ui.mute.textContent = "Mute";
      ui.micLevel.style.width = "0";
      ui.agentLevel.style.width = "0";
    }
  }

  function levelWidth(rms) {
    // -60 dBFS … 0 dBFS → 0 … 100 %
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    return `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100)).toFixed(0)}%`;
  }

  // ------------------------------------------------------------------ transcript

  let partial = null; // the assistant line whose transcript is still arriving
  let lastAssistant = null; // the assistant line heard last (its audio may still play)

  function addLine(role, text, cls) {
    const li = document.createElement("li");
    li.className = `${role}${cls ? ` ${cls}` : ""}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Agent";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(who, body);
    ui.transcript.append(li);
    ui.empty.hidden = true;
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    return li;
  }

  function onText(msg) {
    const role = msg.role === "user" ? "user" : "assistant";
    const text = String(msg.text ?? "");
    if (role === "user") {
      addLine("user", text);
      return;
    }
    if (!msg.final) {
      if (!partial) partial = lastAssistant = addLine("assistant", "", "partial");
      partial.querySelector(".text").textContent += text;
    } else if (partial) {
      partial.querySelector(".text").textContent = text;
      partial.classList.remove("partial");
      partial = null;
    } else {
      lastAssistant = addLine("assistant", text);
    }
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function interruptPartial(playing) {
    // The transcript runs ahead of the audio: the line cut off is the one still playing.
    const cut = partial || (playing ? lastAssistant : null);
    if (cut) {
      cut.classList.remove("partial");
      cut.classList.add("interrupted");
    }
    partial = null;
    lastAssistant = null;
  }

  // ------------------------------------------------------------------ audio

  function base64ToBuffer(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  async function openAudio(stream) {
    // Prefer a context at 24 kHz (the agent's rate: no resampling on either side); the
    // browser resamples the microphone. Fall back to the device rate when it must.
    let context = null;
    let source = null;
    const tried = [];
    for (const rate of [24000, undefined]) {
      try {
        context = rate ? new AudioContext({ sampleRate: rate, latencyHint: "interactive" })
                       : new AudioContext({ latencyHint: "interactive" });
        if (!RATES.includes(context.sampleRate)) throw new Error(`${context.sampleRate} Hz`);
        source = context.createMediaStreamSource(stream);
        break;
      } catch (err) {
        tried.push(err.message);
        if (context) context.close().catch(() => {});
        context = null;
      }
    }
    if (!context) {
      throw new Error(`this browser cannot run audio at 16, 24 or 48 kHz (${tried.join("; ")})`);
    }
    try {
      await context.audioWorklet.addModule("/softphone/static/capture-worklet.js");
      await context.audioWorklet.addModule("/softphone/static/playback-worklet.js");
    } catch (err) {
      context.close().catch(() => {});
      throw new Error(`the audio worklets could not be loaded from the server (${err.message})`);
    }
    const capture = new AudioWorkletNode(context, "capture", { numberOfInputs: 1, numberOfOutputs: 0 });
    const playback = new AudioWorkletNode(context, "playback", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    });
    source.connect(capture);
    playback.connect(context.destination);
    await context.resume();
    return { context, source, capture, playback };
  }

  async function serverReachable() {
    try {
      const response = await fetch("/softphone/config", { cache: "no-store" });
      return response.ok;
    } catch {
      return false;
    }
  }

  // ------------------------------------------------------------------ the call

  function agentId() {
    return config && config.agents ? ui.agent.value : ui.agentName.value.trim();
  }

  async function startCall() {
    hideAlert();
    if (typeof io !== "function") {
      showAlert("The Socket.IO client did not load (the server's node_modules is missing: run `npm ci`).");
      setState("error", "Unavailable");
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showAlert("This page needs a secure address (https://, or http://localhost) to use the microphone.");
      setState("error", "No microphone");
      return;
    }
    setInCall(true);
    setState("connecting", "Checking the server…");
    if (!(await serverReachable())) {
      setInCall(false);
      setState("error", "Offline");
      showAlert("Cannot reach the server. Check your connection (or whether the bridge is running) and try again.");
      return;
    }
    setState("connecting", "Starting microphone…");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      setInCall(false);
      setState("error", "No microphone");
      if (err.name === "NotAllowedError" || err.name === "SecurityError") {
        showAlert("Microphone access was refused. Allow the microphone for this site in the browser's settings, then press Call again.");
      } else if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
        showAlert("No microphone was found. Plug one in and press Call again.");
      } else {
        showAlert(`The microphone could not be started: ${err.message || err.name}`);
      }
      return;
    }
    let audio;
    try {
      audio = await openAudio(stream);
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      setInCall(false);
      setState("error", "Audio unavailable");
      showAlert(`Audio could not be started: ${err.message}`);
      return;
    }
    const rate = audio.context.sampleRate;
    ui.rate.textContent = `${rate / 1000} kHz`;
    setState("connecting", "Connecting…");

    const socket = io("/softphone", {
      path: "/socket.io/",
      transports: ["websocket", "polling"],
      tryAllTransports: true, // WebSocket first, long-polling when it cannot connect
      // A dropped connection comes back to the same call (the server keeps it for
      // SOCKETIO_RESUME_GRACE_S, 10 s by default): the resume id is sent on every connect.
      reconnection: true,
      reconnectionAttempts: 5,
      reconnectionDelay: 500,
      reconnectionDelayMax: 2000,
      timeout: 10000,
      auth: {
        agentId: agentId(),
        sample_rate: rate,
        token: ui.token.value || undefined,
        resume: crypto.randomUUID().replaceAll("-", ""),
      },
    });
    socket.io.on("reconnect_failed", () => end("The connection was lost and could not be restored."));
    call = { socket, stream, ...audio, rate, ended: false, streaming: false, muted: false,
             bufferedMs: 0 };
    wire(call);
  }

  function wire(c) {
    const { socket } = c;

    c.capture.port.onmessage = (event) => {
      ui.micLevel.style.width = levelWidth(c.muted ? 0 : event.data.level);
      if (c.streaming && socket.connected) {
        socket.emit("audio", { data: event.data.pcm, meta_info: { sample_rate: c.rate } });
      }
    };
    c.playback.port.onmessage = (event) => {
      const msg = event.data;
      for (const name of msg.marks) socket.emit("mark", { name });
      ui.played.dataset.ms = String(Math.round(msg.playedMs));
      ui.played.textContent = `${(msg.playedMs / 1000).toFixed(1)} s`;
      if (msg.type === "progress") {
        c.bufferedMs = msg.bufferedMs;
        ui.agentLevel.style.width = levelWidth(msg.level);
      }
    };

    socket.on("status", (msg) => {
      if (msg.state === "connected") {
        c.streaming = true;
        c.reconnecting = false;
        ui.session.textContent = msg.session ? msg.session.slice(0, 10) : "–";
        setState("connected", "Connected");
      } else if (msg.state === "agent-ready") {
        setState("in-call", "In call");
      } else if (msg.state === "ended") {
        end(msg.reason === "hung up" ? "Call ended." : `Call ended: ${msg.reason}.`, "info");
      }
    });
    socket.on("audio", (msg) => {
      const pcm = msg.data instanceof ArrayBuffer ? msg.data : base64ToBuffer(msg.data);
      c.playback.port.postMessage({ type: "audio", pcm }, [pcm]);
    });
    socket.on("mark", (msg) => c.playback.port.postMessage({ type: "mark", name: msg.name }));
    socket.on("clear", () => {
      c.playback.port.postMessage({ type: "clear" });
      interruptPartial(c.bufferedMs > 0);
      c.bufferedMs = 0;
    });
    socket.on("text", onText);
    socket.on("error", (msg) => {
      if (msg && msg.message) showAlert(`The bridge dropped a message: ${msg.message}`);
    });
    socket.on("connect_error", (err) => {
      if (c.reconnecting && !(err.data && err.data.code)) return; // the next attempt follows
      if (err.data && err.data.code) {
        end(`The call was refused: ${err.message}.`);
      } else {
        end(`Cannot reach the server (${err.message}). Check your connection and try again.`);
      }
    });
    socket.on("disconnect", (reason) => {
      if (!c.ended && socket.active) { // lost, not closed: socket.io reconnects
        c.reconnecting = true;
        c.streaming = false;
        setState("connecting", "Reconnecting…");
      } else if (!c.ended) {
        end(reason === "io client disconnect" ? "Call ended." : `The connection was lost (${reason}).`,
            reason === "io client disconnect" ? "info" : "error");
      }
    });
  }

  function end(message, kind = "error") {
    const c = call;
    if (!c || c.ended) return;
    c.ended = true;
    c.streaming = false;
    call = null;
    c.stream.getTracks().forEach((t) => t.stop());
    c.context.close().catch(() => {});
    c.socket.off();
    c.socket.disconnect();
    interruptPartial(false);
    setInCall(false);
    setState(kind === "info" ? "ended" : "error", kind === "info" ? "Ended" : "Not connected");
    if (message) showAlert(message, kind);
  }

  function hangUp() {
    const c = call;
    if (!c) return;
    setState("connecting", "Hanging up…");
    c.streaming = false;
    if (!c.socket.connected) {
      end("Call ended.", "info");
      return;
    }
    // The bridge answers with status "ended" and closes; don't wait forever for it.
    c.socket.timeout(3000).emit("hangup", {}, () => end("Call ended.", "info"));
  }

  function toggleMute() {
    const c = call;
    if (!c) return;
    c.muted = !c.muted;
    c.capture.port.postMessage({ muted: c.muted });
    ui.mute.setAttribute("aria-pressed", String(c.muted));
    ui.mute.textContent = c.muted ? "Unmute" : "Mute";
  }

  function sendText(event) {
    event.preventDefault();
    const c = call;
    const text = ui.sayText.value.trim();
    if (!c || !text || !c.socket.connected) return;
    ui.sayText.value = "";
    addLine("user", text, "typed");
    c.socket.timeout(5000).emit("text", { data: text }, (err, ack) => {
      if (err) showAlert("The message was not acknowledged; it may not have reached the agent.");
      else if (!ack.ok) showAlert(`The message was not accepted: ${ack.error.message}`);
    });
  }

  // ------------------------------------------------------------------ start-up

  async function loadConfig() {
    try {
      const response = await fetch("/softphone/config", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      config = await response.json();
    } catch (err) {
      showAlert(`Cannot reach the server (${err.message}). Reload the page when it is back.`);
      setState("error", "Offline");
      return;
    }
    const params = new URLSearchParams(location.hash.slice(1));
    if (config.agents) {
      for (const name of config.agents) ui.agent.append(new Option(name, name));
      ui.agent.value = params.get("agent") || config.default_agent;
    } else {
      ui.agent.hidden = true;
      ui.agentName.hidden = false;
      document.querySelector("label[for='agent']").htmlFor = "agent-name";
      ui.agentName.value = params.get("agent") || config.default_agent;
    }
    if (config.token_required) {
      ui.token.hidden = false;
      ui.tokenLabel.hidden = false;
      ui.token.value = params.get("token") || "";
    }
  }

  ui.call.addEventListener("click", startCall);
  $("setup").addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in the token field places the call
    if (!call) startCall();
  });
  ui.hangup.addEventListener("click", hangUp);
  ui.mute.addEventListener("click", toggleMute);
  ui.say.addEventListener("submit", sendText);
  window.addEventListener("pagehide", () => end(""));
  loadConfig();
})();
