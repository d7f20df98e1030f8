"""What an outbound call's answering-machine detection (AMD) answer does to the live call.

Owns: the one-time stream references of outbound calls (``token_subject``), holding the
greeting of a call placed with AMD until the answer comes (``stream_started``), and the
answer itself (``answered``): on a machine the agent says its ``voicemail`` after the beep
(spoken by the model, like a goodbye, through ``CallControl.end``) and the call ends once
it was heard; on a human (or an answer AMD could not make) the agent greets and the call
goes on as an inbound one. An answer that comes before the media stream waits for it.

Must not touch the media socket or the model socket: it changes the ``Call`` and asks its
runner to send what that queued (``CallRunner.flush``), as the admin hang-up does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from bridge.call import Call
from bridge.recent import Recent
from bridge.services import Services

logger = logging.getLogger(__name__)

REF_PREFIX = "out-"  # bridge.outbound.place mints these
VOICEMAIL_REASON = "voicemail left"
MACHINE_HANGUP_REASON = "answering machine, no voicemail configured"

Answer = Literal["machine", "human", "unknown"]

# https://www.twilio.com/docs/voice/answering-machine-detection#amd-webhook-parameters
_MACHINE = {"machine_end_beep", "machine_end_silence", "machine_end_other", "machine_start", "fax"}
_HUMAN = {"human"}

# Per process: references already used by a stream, and answers waiting for their stream.
_used_refs: Recent[str, None] = Recent()
_pending: dict[str, Answer] = {}
_MAX_PENDING = 256


def classify(answered_by: str) -> Answer:
    """Twilio's ``AnsweredBy`` as what the bridge does about it."""
    value = answered_by.strip().lower()
    if value in _MACHINE:
        return "machine"
    if value in _HUMAN:
        return "human"
    return "unknown"


def token_subject(params: Mapping[str, str], call_sid: str) -> str | None:
    """What the stream token of this ``start`` must have been minted for: the call sid,
    or the one-time reference of an outbound call (None: that reference was used)."""
    ref = params.get("ref", "")
    if params.get("direction") != "outbound" or not ref.startswith(REF_PREFIX):
        return call_sid
    if ref in _used_refs:
        return None
    _used_refs.put(ref, None)
    return ref


def stream_started(services: Services, call: Call, params: Mapping[str, str]) -> None:
    """An outbound call's stream began: hold its greeting for the AMD answer, if asked,
    and apply an answer that came first."""
    if params.get("direction") != "outbound" or params.get("amd") != "1":
        return
    call.greet = False
    early = _pending.pop(call.call_sid, None)
    if early is not None:
        _apply(call, early, call.started_at)  # the leg's clock: time.monotonic()


def forget(call_sid: str) -> None:
    """The call is over (its final status came): drop an answer still waiting for it."""
    _pending.pop(call_sid, None)


async def answered(services: Services, call_sid: str, answered_by: str) -> Answer:
    """The AMD callback for ``call_sid``: act on the live call, or keep it for its stream."""
    answer = classify(answered_by)
    runner = next((r for r in list(services.calls) if r.call.call_sid == call_sid), None)
    if runner is None:
        if len(_pending) >= _MAX_PENDING:  # answers whose stream never came
            del _pending[next(iter(_pending))]
        _pending[call_sid] = answer
        logger.info("call %s: answered by %s before its stream started", call_sid, answer)
        return answer
    if runner.call.closed is not None:
        return answer
    _apply(runner.call, answer, runner.clock())
    await runner.flush()
    return answer


def _apply(call: Call, answer: Answer, now: float) -> None:
    if answer == "machine":
        message = call.agent.voicemail.strip()
        logger.info(
            "call %s: answering machine: %s",
            call.call_sid,
            "leaving the voicemail" if message else "hanging up",
        )
        # No message: the call ends as soon as nothing is playing.
        call.control.end(VOICEMAIL_REASON if message else MACHINE_HANGUP_REASON, now, message)
        return
    logger.info("call %s: answered by %s: the agent greets", call.call_sid, answer)
    call.greet_late()
