// Microphone capture on the audio thread: 20 ms frames of PCM16 at the context's rate.
// Muted frames are silence rather than gaps, so the agent's voice detection still sees
// the end of an utterance and the stream's timeline stays continuous.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frameSamples = Math.round(sampleRate / 50);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.muted = false;
    this.port.onmessage = (event) => {
      if (typeof event.data.muted === "boolean") this.muted = event.data.muted;
    };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      let s = this.muted ? 0 : channel[i];
      s = s > 1 ? 1 : s < -1 ? -1 : s;
      this.sumSquares += s * s;
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.frameSamples) {
        const level = Math.sqrt(this.sumSquares / this.frameSamples);
        this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
        this.sumSquares = 0;
      }
    }
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
