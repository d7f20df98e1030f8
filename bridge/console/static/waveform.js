// A stereo recording drawn on a canvas (caller on the left channel above, agent on the
// right below), with a cursor that follows an <audio> element; a click seeks.
"use strict";

const WAVE_COLOURS = ["#1f9d55", "#2f6fde"];
const DECODE_RATE = 16000; // plenty for a picture of telephone audio

class Waveform {
  constructor(canvas, cursor, audio) {
    this.canvas = canvas;
    this.cursor = cursor;
    this.audio = audio;
    this.buffer = null;
    this.frame = 0;
    canvas.addEventListener("click", (event) => this.seek(event));
    window.addEventListener("resize", () => this.draw());
    for (const name of ["play", "seeked", "timeupdate", "loadedmetadata"]) {
      audio.addEventListener(name, () => this.follow());
    }
  }

  // Decodes the WAV bytes (WebAudio) and draws them; the bytes are not kept.
  async load(bytes) {
    const context = new OfflineAudioContext(1, 1, DECODE_RATE);
    this.buffer = await context.decodeAudioData(bytes);
    this.draw();
    this.follow();
    return this.buffer;
  }

  clear() {
    this.buffer = null;
    cancelAnimationFrame(this.frame);
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.place(0);
  }

  draw() {
    if (!this.buffer) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    this.canvas.width = width;
    this.canvas.height = height;
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const channels = Math.min(2, this.buffer.numberOfChannels);
    const lane = height / 2;
    ctx.fillStyle = "#e2e6ec";
    ctx.fillRect(0, lane - 0.5 * ratio, width, ratio);
    for (let c = 0; c < 2; c++) {
      const data = this.buffer.getChannelData(Math.min(c, channels - 1));
      const middle = lane * c + lane / 2;
      const perColumn = data.length / width;
      ctx.fillStyle = WAVE_COLOURS[c];
      for (let x = 0; x < width; x++) {
        let low = 0;
        let high = 0;
        const end = Math.min(data.length, Math.floor((x + 1) * perColumn));
        for (let i = Math.floor(x * perColumn); i < end; i++) {
          const v = data[i];
          if (v < low) low = v;
          else if (v > high) high = v;
        }
        const top = middle - high * (lane / 2 - 2);
        const bottom = middle - low * (lane / 2 - 2);
        ctx.fillRect(x, top, 1, Math.max(ratio, bottom - top));
      }
    }
  }

  // Moves the cursor to the audio's position, every animation frame while it plays.
  follow() {
    cancelAnimationFrame(this.frame);
    this.place(this.audio.currentTime);
    if (!this.audio.paused && !this.audio.ended) {
      this.frame = requestAnimationFrame(() => this.follow());
    }
  }

  place(seconds) {
    const total = this.duration();
    const share = total > 0 ? Math.min(1, seconds / total) : 0;
    this.cursor.style.left = `${(share * 100).toFixed(3)}%`;
    this.cursor.dataset.t = seconds.toFixed(3);
  }

  duration() {
    const d = this.audio.duration;
    if (isFinite(d) && d > 0) return d;
    return this.buffer ? this.buffer.duration : 0;
  }

  seek(event) {
    const box = this.canvas.getBoundingClientRect();
    const total = this.duration();
    if (!total || box.width <= 0) return;
    this.audio.currentTime = ((event.clientX - box.left) / box.width) * total;
    this.follow();
  }
}
