// A raw PCM voice client written against the browser WebSocket API (Node: the `ws`
// package has the same shape). Usage: node voice_client.js WS_URL CALLER.pcm
// Streams the 16 kHz PCM16 file like a microphone, then silence; prints one JSON line:
// {events: [...], audio: base64 of what the agent sent}.
const fs = require("fs");
const WebSocket = globalThis.WebSocket ?? require("ws");

const [url, pcmPath] = process.argv.slice(2);
const RATE = 16000;
const FRAME = (RATE * 20) / 1000; // samples in 20 ms
const caller = fs.readFileSync(pcmPath);
const events = [];
const chunks = [];
let received = 0;

const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function speak() {
  const silence = Buffer.alloc(RATE * 2 * 8);
  const audio = Buffer.concat([caller, silence]);
  const start = Date.now();
  for (let k = 0, i = 0; i < audio.length; k++, i += FRAME * 2) {
    if (ws.readyState !== WebSocket.OPEN) return;
    const frame = audio.subarray(i, i + FRAME * 2);
    ws.send(frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.length));
    await sleep(Math.max(0, start + (k + 1) * 20 - Date.now()));
  }
}

ws.onmessage = (msg) => {
  if (typeof msg.data === "string") {
    const event = JSON.parse(msg.data);
    events.push(event);
    if (event.name === "AIConnected") speak();
  } else {
    chunks.push(Buffer.from(msg.data));
    received += msg.data.byteLength;
  }
  const ended = events.some((e) => e.name === "AIResponseEnd");
  if (ended && received >= RATE * 2 * 2) ws.close(1000, "done");
};
ws.onerror = (err) => {
  console.error("websocket error", err.message ?? err);
  process.exit(1);
};
ws.onclose = () => {
  const result = { events, audio: Buffer.concat(chunks).toString("base64") };
  // Exit only once the pipe has it all: process.exit would cut a large write short.
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
};
setTimeout(() => {
  console.error("no reply in time");
  process.exit(2);
}, 90000);
