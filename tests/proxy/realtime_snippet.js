// The README's raw Realtime proxy snippet, run with Node and socket.io-client.
// Usage: node realtime_snippet.js URL speech.pcm OUTDIR
// Speaks speech.pcm (PCM16 24 kHz mono), hears the echo, talks over it (truncating what it
// "played"), clears, types a message and hears the spoken reply. Writes echo.pcm,
// reply.pcm and summary.json to OUTDIR.
const fs = require('fs');
const path = require('path');
const { io } = require(path.join(__dirname, '..', '..', 'node_modules', 'socket.io-client'));

const [url, speechFile, outDir] = process.argv.slice(2);
const speech = fs.readFileSync(speechFile);
const socket = io(url, { transports: ['websocket'], reconnection: false });

const audio = {}; // item id → [Buffer]
const firstAudioAt = {};
const types = [];
const errors = [];
let phase = 'echo';
let echoItem = null;
let replyItem = null;
let pending = 2; // the barge-in's audio sent, and its truncate confirmed: then clear
const clearWhenDone = () => {
  pending -= 1;
  if (pending === 0) socket.emit('realtime-message', { type: 'input_audio_buffer.clear' });
};

function stream(pcm, done) {
  const step = 960; // 20 ms of PCM16 at 24 kHz
  let i = 0;
  const timer = setInterval(() => {
    if (i >= pcm.length) { clearInterval(timer); if (done) done(); return; }
    socket.emit('realtime-audio', pcm.subarray(i, i + step)); // binary PCM16 24 kHz mono
    i += step;
  }, 20);
}

function finish() {
  const join = (id) => (id && audio[id] ? Buffer.concat(audio[id]) : Buffer.alloc(0));
  fs.writeFileSync(path.join(outDir, 'echo.pcm'), join(echoItem));
  fs.writeFileSync(path.join(outDir, 'reply.pcm'), join(replyItem));
  fs.writeFileSync(path.join(outDir, 'summary.json'), JSON.stringify({ types, errors }));
  socket.disconnect();
  process.exit(0);
}

socket.on('connect', () => {
  socket.emit('realtime-message', { type: 'session.create', session: { modalities: ['text', 'audio'],
    instructions: 'Be brief.', voice: 'alloy', input_audio_format: 'pcm16', output_audio_format: 'pcm16',
    input_audio_transcription: { model: 'whisper-1' },
    turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 200 } } });
  stream(speech);
});

socket.on('realtime-response', (data) => { /* a JSON server event, or binary audio */
  types.push(data.type);
  switch (data.type) {
    case 'response.audio.delta':
      (audio[data.item_id] = audio[data.item_id] || []).push(Buffer.from(data.delta, 'base64'));
      if (!(data.item_id in firstAudioAt)) firstAudioAt[data.item_id] = Date.now();
      break;
    case 'response.audio.done':
      if (phase === 'echo') {
        echoItem = data.item_id;
        phase = 'barge-in';
        stream(speech.subarray(0, 24000 * 2 * 2), clearWhenDone); // talk over it
      } else if (phase === 'reply') {
        replyItem = data.item_id;
        finish();
      }
      break;
    case 'input_audio_buffer.speech_started':
      if (phase === 'barge-in') { // stop playback; tell the model what was heard
        const sentMs = Math.floor(Buffer.concat(audio[echoItem]).length / 48);
        const playedMs = Date.now() - firstAudioAt[echoItem];
        socket.emit('realtime-message', { type: 'conversation.item.truncate', item_id: echoItem,
          content_index: 0, audio_end_ms: Math.max(0, Math.min(playedMs, sentMs)) });
      }
      break;
    case 'conversation.item.truncated':
      phase = 'clear';
      clearWhenDone();
      break;
    case 'input_audio_buffer.cleared':
      phase = 'reply';
      socket.emit('realtime-message', { type: 'conversation.item.create', item: { type: 'message',
        role: 'user', content: [{ type: 'input_text', text: 'Hello there' }] } });
      socket.emit('realtime-message', { type: 'response.create' });
      break;
    default:
  }
});

socket.on('realtime-error', (err) => { errors.push(err); });
socket.on('connect_error', (err) => { console.error('refused:', err.message); process.exit(2); });
