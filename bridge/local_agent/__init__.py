"""The built-in local agent: a Realtime-compatible voice agent that runs on this machine.

It is at once the keyless default agent (``bridge local-agent``), the demo's far end and the
test double for the OpenAI Realtime service. It shares no code with the bridge's own client
side (``bridge.ai``): it checks what the bridge sends the way the service does, with its own
copy of the rules, so it can catch the bridge's mistakes.

* ``server``: the websockets shell (handshake checks, pumping frames, closing) and its
  fault switches (``Faults``: refuse, expire, stall, drop).
* ``rest``: the REST endpoints on their own HTTP port: ephemeral client secrets (which the
  Realtime endpoint accepts until they expire) and speech (a tone burst per word).
* ``session``: one session, sans-I/O: state, dispatch, echo, barge-in, maximum duration.
* ``checks``: the service's shape rules for client events, and the problems they can meet.
* ``session_config``: the session configuration: GA defaults, ``session.update`` rules, merge.
* ``conversation``: the conversation items and the ``conversation.item.*`` operations.
* ``input`` / ``vad`` / ``response``: the input buffer and its VAD, and spoken responses
  (with the packaged greeting).
* ``codec``: the session's wire audio formats (``audio/pcm`` 24 kHz, ``audio/pcmu``) to and
  from the PCM16 24 kHz the rest works on.
"""

from bridge.local_agent.server import (
    GREETING_TRANSCRIPT,
    AgentSession,
    Faults,
    LocalAgentServer,
    load_greeting,
    serve_local_agent,
)

__all__ = [
    "GREETING_TRANSCRIPT",
    "AgentSession",
    "Faults",
    "LocalAgentServer",
    "load_greeting",
    "serve_local_agent",
]
