"""What a leg is: the client-protocol side of a call, as the runner sees it.

A ``Leg`` is a client protocol's shell: the Twilio media stream (``bridge.phone``), the
browser softphone (``bridge.softphone``), the ``/chat/v1`` gateway (``bridge.chat``), raw
PCM clients (``bridge.wsvoice``) and the companion protocol (``bridge.companion``). The
runner (``bridge.runner``) pumps one leg and one model socket.

Adding a leg (a client protocol)
--------------------------------
1. ``bridge/<leg>/protocol.py``, sans-I/O (no asyncio, sockets, clock or Call): parse each
   wire message into a frozen dataclass or raise ``PhoneProtocolError`` (``fatal``: end the
   call, else drop the frame), map what the call needs onto ``bridge.inputs``
   (``CallerAudio(payload)`` in the leg's codec and rate, ``FarEndMark(name)``,
   ``Dtmf(digit)``, ``TextInput(text)``, ``Interrupt()``, ``HangUp(reason)``), and build the
   wire form of the ``PhoneOut`` commands (``SendAudio``, ``SendMark``, ``ClearPlayback``).
   Models: ``phone/protocol.py`` (``leg_input``), ``softphone/protocol.py``.
2. ``bridge/<leg>/leg.py``, a thin shell implementing :class:`Leg`. ``pump(runner)`` reads
   the wire, takes ``now = runner.clock()`` as each message arrives, parses it and hands
   every input over: ``if (ending := await runner.feed(leg_input, now)) is not None:
   return ending`` (a ``HangUp`` comes back as its ``Ending``). It returns an ``Ending``
   itself only for the transport: closed, idle, or a fatal protocol error
   (``POLICY_VIOLATION``). It never calls a ``Call`` method or ``runner.flush``.
   ``send(outs)`` plays the commands in the order given; ``close(reason, code)`` is
   idempotent and never raises.
3. Where the connection is accepted (a route, a Socket.IO handler): refuse when
   ``services.at_capacity``, then ``call = Call.for_leg(agent=…, call_sid=…,
   codec="mulaw" | "pcm16", rate=…, lead_ms=settings.playout_lead_ms,
   now=time.monotonic())`` and ``await services.run_call(call, leg, leg_name="<leg>",
   from_number=…, to_number=…, observers=[…])`` (``Services`` is ``app.state.services``;
   the leg name labels its metrics and call records). Another codec means a new ``Codec`` in
   ``bridge.audio.transcode``, not code in the leg.
4. Tests: the protocol pure and exhaustive; the shell with a fake runner whose ``feed``
   records the inputs (``tests/softphone/test_softphone_leg.py``); one call end to end
   over a loopback socket.

What it gets for free: the model session (OpenAI, or the local agent), transcoding both
ways, paced playout with marks, barge-in (the model's VAD, the local detector, a client
``Interrupt``) truncated to what the caller heard, the greeting guard, transcripts and the
call timeline for observers (``Services.observers`` and per call), the runner's metrics
(frames in, uplink/downlink latency, clear latency) and the registry behind capacity and
draining.

Marks: a leg whose client does not echo marks (``send`` drops ``SendMark``) creates its
call with ``Call.for_leg(..., echoes_marks=False)``. It is paced from the release schedule
(``bridge.schedule`` counts from our release, not from echoes), its chunks count as heard
at their modelled end and its barge-ins are truncated at what the schedule says was heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bridge.inputs import LegInput
from bridge.playout import PhoneOut

# WebSocket close codes a leg is closed with.
NORMAL, POLICY_VIOLATION, INTERNAL_ERROR, TRY_AGAIN_LATER = 1000, 1008, 1011, 1013


@dataclass(frozen=True)
class Ending:
    """Why a call ended, and the close code its leg gets."""

    reason: str
    code: int = NORMAL
    # No model session could be opened (the call's fallback applies; the breaker counts it).
    model_unreachable: bool = False

    @property
    def normal(self) -> bool:
        return self.code == NORMAL


class AudioTap(Protocol):
    """Sees the call's audio beside the call (``bridge.store.recording``); never blocks."""

    def caller(self, payload: bytes, now: float, stream_ms: int | None = None) -> None:
        """Caller audio in the leg's format, which arrived at ``now`` (and starts at
        ``stream_ms`` of the leg's own stream, when the leg says)."""

    def played(self, outs: list[PhoneOut], now: float) -> None:
        """``outs`` were handed to the leg at ``now``."""


class Feeder(Protocol):
    """What a leg's ``pump`` sees of the runner (``bridge.runner.CallRunner``)."""

    def clock(self) -> float: ...

    async def feed(self, leg_input: LegInput, now: float) -> Ending | None:
        """Apply one input that arrived at ``now``; an ``Ending`` means the call is over."""
        ...


class Leg(Protocol):
    """The phone side of a call, as the runner sees it (the recipe is in the module doc)."""

    async def pump(self, runner: Feeder) -> Ending:
        """Hand every input to ``runner.feed`` until the leg ends; say why it ended."""
        ...

    async def send(self, outs: list[PhoneOut]) -> None:
        """Play the Call's commands on the leg."""
        ...

    async def close(self, reason: str, code: int = NORMAL) -> None: ...
