// Agent playback on the audio thread: a small jitter buffer of PCM16 chunks and marks.
//
// Audio plays in arrival order. A mark is "reached" when everything queued before it
// has been played; reached marks are reported to the page, which echoes them to the
// bridge (that is how the bridge knows what the caller heard). "clear" drops all queued
// audio at once and reports every pending mark, exactly like a phone network does.
//
// Jitter buffer: after an underrun, playback waits until PREBUFFER_S of audio is queued,
// or until no more audio has come for FLUSH_AFTER_S (the end of a reply).
const PREBUFFER_S = 0.06;
const FLUSH_AFTER_S = 0.1;
const REPORT_EVERY_S = 0.05;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {pcm: Float32Array, offset} | {mark: string}
    this.buffered = 0; // samples queued
    this.priming = true;
    this.lastPush = 0;
    this.played = 0; // samples of agent audio played since the start
    this.reached = [];
    this.sumSquares = 0;
    this.levelSamples = 0;
    this.lastReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      const int16 = new Int16Array(msg.pcm);
      const pcm = new Float32Array(int16.length);
      for (let i = 0; i < int16.length; i++) pcm[i] = int16[i] / 32768;
      this.queue.push({ pcm, offset: 0 });
      this.buffered += pcm.length;
      this.lastPush = currentTime;
    } else if (msg.type === "mark") {
      this.queue.push({ mark: msg.name });
    } else if (msg.type === "clear") {
      const marks = this.reached;
      for (const entry of this.queue) if (entry.mark !== undefined) marks.push(entry.mark);
      this.queue = [];
      this.reached = [];
      this.buffered = 0;
      this.priming = true;
      this.port.postMessage({ type: "cleared", marks, playedMs: this.playedMs() });
    }
  }

  playedMs() {
    return (this.played * 1000) / sampleRate;
  }

  takeLeadingMarks() {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      this.reached.push(this.queue.shift().mark);
    }
  }

  process(inputs, outputs) {
    const output = outputs[0];
    const out = output[0];
    let written = 0;
    this.takeLeadingMarks();
    if (this.priming && this.buffered > 0 &&
        (this.buffered >= PREBUFFER_S * sampleRate || currentTime - this.lastPush >= FLUSH_AFTER_S)) {
      this.priming = false;
    }
    if (!this.priming) {
      while (written < out.length && this.queue.length) {
        const head = this.queue[0];
        if (head.mark !== undefined) {
          this.reached.push(head.mark);
          this.queue.shift();
          continue;
        }
        const n = Math.min(out.length - written, head.pcm.length - head.offset);
        out.set(head.pcm.subarray(head.offset, head.offset + n), written);
        for (let i = written; i < written + n; i++) this.sumSquares += out[i] * out[i];
        head.offset += n;
        written += n;
        this.buffered -= n;
        if (head.offset === head.pcm.length) this.queue.shift();
      }
      this.takeLeadingMarks();
      this.played += written;
      if (this.buffered === 0) this.priming = true;
    }
    out.fill(0, written);
    for (let c = 1; c < output.length; c++) output[c].set(out);
    this.levelSamples += out.length;
    if (this.reached.length || currentTime - this.lastReport >= REPORT_EVERY_S) {
      const level = Math.sqrt(this.sumSquares / Math.max(1, this.levelSamples));
      this.port.postMessage({
        type: "progress",
        marks: this.reached,
        playedMs: this.playedMs(),
        bufferedMs: (this.buffered * 1000) / sampleRate,
        level,
      });
      this.reached = [];
      this.sumSquares = 0;
      this.levelSamples = 0;
      this.lastReport = currentTime;
    }
    return true;
  }
}

registerProcessor("playback", PlaybackProcessor);
