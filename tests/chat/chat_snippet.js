// The /chat/v1 client of the gateway's documentation, nearly verbatim, run by
// test_chat_node.py: node chat_snippet.js <server url> <caller.pcm (PCM16 16 kHz)>.
// It prints what it received as one JSON line; the test judges it.
const fs = require('fs');
const { io } = require('socket.io-client');

const [server, pcmPath] = process.argv.slice(2);
const caller = fs.readFileSync(pcmPath);
const got = { welcome: null, items: {}, order: [], texts: [], errors: [], clears: 0 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const until = async (what, test) => {
  const deadline = Date.now() + 30000;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
};

const socket = io(`${server}/chat/v1`, { query: { agentId: 'support' } });
socket.on('audio', (m) => { /* m.data base64 audio, m.meta_info */
  const id = m.meta_info.item_id;
  if (!(id in got.items)) { got.items[id] = []; got.order.push(id); }
  got.items[id].push(m.data);
  got.welcome = got.welcome || m.meta_info;
});
socket.on('text', (m) => { /* m.data text */ got.texts.push(m); });
socket.on('error', (m) => { /* m.message */ got.errors.push(m.message); });
socket.on('clear', () => { /* stop playback */ got.clears += 1; });

const ms = (id) => (got.items[id] || []).reduce((n, b64) => n + Buffer.from(b64, 'base64').length, 0) / 32;

(async () => {
  await until('the welcome message', () => got.order.length && got.texts.some((t) => t.role === 'assistant'));
  socket.emit('clear');
  await until('clear', () => got.clears >= 1);
  // Speak (20 ms frames at real-time pace), then keep the microphone open with silence.
  const frame = 640;
  const silence = Buffer.alloc(frame * 75);
  for (const pcm of [caller, silence]) {
    for (let i = 0; i < pcm.length; i += frame) {
      const base64Pcm16 = pcm.subarray(i, i + frame).toString('base64');
      socket.emit('audio', { data: base64Pcm16, meta_info: { stream_sid: 'optional-id' } });
      await sleep(20);
    }
  }
  await until('the echo', () => got.order.length >= 2 && ms(got.order[1]) >= 2000);
  socket.emit('text', { data: 'Hello, how can I help you?' });
  await until('a spoken reply', () => got.order.length >= 3 && ms(got.order[2]) >= 500);
  const items = Object.fromEntries(got.order.map((id) => [id, got.items[id].join('|')]));
  console.log(JSON.stringify({ ...got, items }));
  socket.close();
})().catch((err) => {
  console.error(err.message, JSON.stringify({ ...got, items: got.order }));
  process.exit(1);
});
