"""What a caller gets when the model cannot be reached: the agent's fallback, as TwiML.

Owns the fallback TwiML and ``POST /twilio/after``, the ``<Connect action>`` of every
call (https://www.twilio.com/docs/voice/twiml/connect: when ``<Connect>`` ends, Twilio
requests the action URL with the call's standard parameters and runs the TwiML it gets).
The stream ends with the caller still on the line only when the bridge closed it: if
this call's model could not be reached, the answer is the agent's fallback, else a plain
``<Hangup/>``. The request is signed like the voice webhook (``X-Twilio-Signature`` over
the public URL with its ``?agent=…`` query), so a forged agent name is refused.

An agent's fallback (``fallback`` in the agents file): ``say`` a message and hang up,
``redirect`` to another TwiML URL, or ``dial`` a number or SIP URI. Without one: say
``UNAVAILABLE_MESSAGE`` and hang up. The webhook answers with the same TwiML directly
while the circuit breaker is open (``bridge.breaker``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.twiml.voice_response import Dial, VoiceResponse

from bridge.agents import Agent
from bridge.config import Settings
from twiml.security import SIGNATURE_HEADER, validate_twilio_signature
from twiml.voice import _CALL_SID, AFTER_PATH, _clip, _read_form

logger = logging.getLogger(__name__)

BUSY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'
HANGUP_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'


def fallback_twiml(agent: Agent, settings: Settings) -> str:
    """The agent's fallback as a TwiML document (see the module doc)."""
    response = VoiceResponse()
    fallback = agent.fallback
    if fallback is None or fallback.kind == "say":
        message = fallback.target if fallback is not None else settings.unavailable_message
        if message:
            response.say(_clip(message, 4000))
        response.hangup()
    elif fallback.kind == "redirect":
        response.redirect(fallback.target, method="POST")
    else:
        dial = Dial()
        if fallback.target.startswith(("sip:", "sips:")):
            dial.sip(fallback.target)
        else:
            dial.number(fallback.target)
        response.append(dial)
    return str(response)


def after_routes(settings: Settings, model_failed: Callable[[str], bool]) -> list[Route]:
    """``POST /twilio/after``; ``model_failed(call_sid)`` says whether the fallback applies."""
    after_url = (settings.public_url or "").rstrip("/") + AFTER_PATH

    async def after(request: Request) -> Response:
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        if settings.twilio_auth_token:
            url = after_url + (f"?{request.url.query}" if request.url.query else "")
            signature = request.headers.get(SIGNATURE_HEADER)
            if not validate_twilio_signature(settings.twilio_auth_token, url, form, signature):
                logger.warning("connect action rejected: bad or missing X-Twilio-Signature")
                return PlainTextResponse("invalid Twilio signature", status_code=403)
        call_sid = form.get("CallSid", "")
        if not _CALL_SID.fullmatch(call_sid):
            return PlainTextResponse("missing or malformed CallSid", status_code=400)
        agent = settings.agent(request.query_params.get("agent", "")) or settings.agent_for(None)
        if model_failed(call_sid):
            logger.info("call %s: model unreachable: agent %r fallback", call_sid, agent.name)
            twiml = fallback_twiml(agent, settings)
        else:
            twiml = HANGUP_TWIML
        return Response(twiml, media_type="text/xml")

    return [Route(AFTER_PATH, after, methods=["POST"])]
