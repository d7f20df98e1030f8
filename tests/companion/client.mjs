// A companion client written against the browser WebSocket API (onopen, onmessage, send):
// Node 22+ has it built in; on Node 20 the `ws` package provides the same shape.
// Usage: node client.mjs <ws url> <speech.pcm (PCM16 24 kHz)> <out.pcm>
import { readFileSync, writeFileSync } from "node:fs";

const WS = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const [url, speechPath, outPath] = process.argv.slice(2);
const speech = readFileSync(speechPath);
const received = [];
const kinds = [];
const ws = new WS(url);
const send = (type, data) => ws.send(JSON.stringify({ type, data }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stream(pcm) {
  const frame = 960; // 20 ms of PCM16 at 24 kHz
  const start = Date.now();
  for (let i = 0, k = 1; i < pcm.length; i += frame, k++) {
    send("audio", { audio: Buffer.from(pcm.subarray(i, i + frame)).toString("base64") });
    const wait = start + k * 20 - Date.now();
    if (wait > 0) await sleep(wait);
  }
}

ws.onopen = () => {
  send("auth", { userId: "node-user", conversationId: "node-conv" });
  send("start_realtime", {
    personalityTraits: { playfulness: 90, empathy: 50, humor: 50, intelligence: 50, supportiveness: 50 },
    voiceSettings: { voice: "shimmer", speed: 1.0, pitch: 1.0, volume: 1.0 },
  });
};
ws.onmessage = async (event) => {
  const message = JSON.parse(event.data);
  kinds.push(message.type);
  if (message.type === "session_ready") {
    await stream(speech);
    await stream(Buffer.alloc(24000 * 2 * 2)); // the mic stays open, silent
  } else if (message.type === "audio_delta") {
    received.push(Buffer.from(message.data.audioData, "base64"));
  } else if (message.type === "response_complete" && received.length) {
    writeFileSync(outPath, Buffer.concat(received));
    console.log(JSON.stringify({ kinds: [...new Set(kinds)] }));
    ws.close();
  } else if (message.type === "error") {
    console.error(message.data.error);
    process.exit(1);
  }
};
ws.onclose = () => process.exit(received.length ? 0 : 2);
