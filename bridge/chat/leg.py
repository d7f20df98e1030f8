"""``ChatLeg``: one ``/chat/v1`` client as the phone side of a ``Call``.

The softphone's leg (``bridge.softphone.leg``: bounded inbox, slow-reader backlog, idle
timeout, hang-up on disconnect) with the gateway's wire format:

* audio comes at whatever rate each message says; the call runs at the session's rate
  and :class:`RateMatch` resamples between the two, both ways, so replies go out at the
  rate of the client's latest audio, with its ``stream_sid``;
* these clients do not echo marks: ``SendMark`` is not sent (the call was made with
  ``echoes_marks=False``, so playout counts audio as heard at its modelled end);
* transcripts go out as ``text`` ``{data, role, final}``, agent errors as ``error``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.audio.resample import StreamResampler
from bridge.call import Call, CallEvent
from bridge.chat.protocol import AudioIn, ClientEvent, audio_out, text_out
from bridge.chat.protocol import ClearIn as ChatClear
from bridge.chat.protocol import TextIn as ChatText
from bridge.softphone.leg import SoftphoneLeg
from bridge.softphone.protocol import AudioIn as SoftphoneAudio
from bridge.softphone.protocol import ClearIn as SoftphoneClear
from bridge.softphone.protocol import TextIn as SoftphoneText

_PCM16LE = np.dtype("<i2")
# Call events that mean someone is talking or typing (the idle timer restarts).
_ACTIVITY = frozenset({"speech_started", "speech_stopped", "user_text", "barge_in"})


class RateMatch:
    """PCM16 between the client's current rate and the call's, both ways (stateful)."""

    def __init__(self, call_rate: int) -> None:
        self.call_rate = call_rate
        self.client_rate = call_rate
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None

    def uplink(self, pcm: bytes, rate: int) -> bytes:
        """Client audio at ``rate`` → the call's rate (a new rate restarts both ways)."""
        if rate != self.client_rate:
            self.client_rate = rate
            same = rate == self.call_rate
            self._up = None if same else StreamResampler(rate, self.call_rate)
            self._down = None if same else StreamResampler(self.call_rate, rate)
        return _through(self._up, pcm)

    def downlink(self, pcm: bytes) -> bytes:
        """Call audio → the client's rate."""
        return _through(self._down, pcm)


def _through(resampler: StreamResampler | None, pcm: bytes) -> bytes:
    if resampler is None:
        return pcm
    samples = np.frombuffer(pcm, dtype=_PCM16LE)
    return resampler.process(samples).astype(_PCM16LE, copy=False).tobytes()


class ChatLeg(SoftphoneLeg):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rates = RateMatch(self.sample_rate)
        self.stream_sid: str | None = None

    def offer_chat(self, event: ClientEvent) -> bool:
        """Queue a parsed ``/chat/v1`` event; False if it was dropped (inbox full, ended)."""
        match event:
            case AudioIn(pcm=pcm, rate=rate, stream_sid=stream_sid):
                if stream_sid is not None:
                    self.stream_sid = stream_sid
                pcm = self.rates.uplink(pcm, rate)
                return not pcm or self.offer(SoftphoneAudio(pcm))
            case ChatText(text=text):
                return self.offer(SoftphoneText(text))
            case ChatClear():
                return self.offer(SoftphoneClear())

    async def _send_audio(self, payload: bytes, item_id: str | None) -> None:
        pcm = self.rates.downlink(payload)
        if pcm:
            rate = self.rates.client_rate
            await self._emit("audio", audio_out(pcm, rate, self.stream_sid, item_id))

    async def _send_mark(self, name: str) -> None:
        """Not sent: these clients do not echo marks."""

    def observe(self, call: Call, events: list[CallEvent]) -> None:
        """Observer for ``Services.run_call``: transcripts and agent errors for the client."""
        for event in events:
            detail = event.detail
            match event.kind:
                case "transcript" | "transcript_delta":
                    role = detail.get("role", "assistant")
                    final = event.kind == "transcript"
                    self._note("text", text_out(detail.get("text", ""), role, final=final))
                case "model_error":
                    message = f"the agent reported {detail.get('code')}"
                    self._note("error", {"message": message, "code": "agent_error"})
                case kind if kind in _ACTIVITY:
                    self._last_activity = self._clock()
                case _:
                    pass
