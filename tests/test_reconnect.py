"""A call outlives its model session: whole calls over real loopback sockets with the local
agent's fault switches (expire, refuse, drop, stall) and session recycling."""

from __future__ import annotations

import logging
import socket
from typing import Any

import numpy as np
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from bridge.ai.client import connect_realtime
from bridge.call import Call, CallEvent
from bridge.config import Settings
from bridge.local_agent import AgentSession, Faults
from bridge.sim.caller import simulate_call
from bridge.sim.result import CallResult
from tests.e2e import Rig, fixture, match_through_gaps, rig, run_undisturbed, silence, until
from tests.test_e2e_robustness import closed_within, stream

CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
RATE = 8000


def two_utterances() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caller audio: silence through the greeting, an utterance, a long pause, another one."""
    hello = fixture("caller-hello.wav")
    first = hello[int(4.6 * RATE) : int(8.8 * RATE)]
    speech = fixture("speech-8k.wav")
    second = speech[: int(2.5 * RATE)]
    audio = np.concatenate([hello[: int(9.0 * RATE)], silence(6.0), second, silence(1.0)])
    return audio, first, second


def timeline(r: Rig) -> list[CallEvent]:
    events: list[CallEvent] = []

    def observe(call: Call, batch: list[CallEvent]) -> None:
        events.extend(batch)

    r.bridge.services.observers.append(observe)
    return events


async def call(r: Rig, audio: np.ndarray, **kwargs: Any) -> CallResult:
    return await simulate_call(
        r.bridge.base_url,
        audio,
        public_url=r.bridge.public_url,
        auth_token=r.bridge.auth_token,
        tail_s=3.0,
        **kwargs,
    )


def unexpected_errors(sessions: list[AgentSession]) -> list[dict[str, Any]]:
    """Errors the bridge caused (a truncate of an unknown item, a bad replay item…)."""
    return [e for s in sessions for e in s.errors if e["error"]["code"] != "session_expired"]


def heard_after(utterance: np.ndarray, result: CallResult, end_s: float) -> float:
    """How well the echo of ``utterance`` came through, played after ``end_s``."""
    score, at = match_through_gaps(utterance, result.heard)
    assert at / RATE > end_s, (at / RATE, end_s)
    return score


def test_a_session_that_expires_mid_conversation_is_replaced_and_the_call_goes_on():
    async def main() -> None:
        audio, first, second = two_utterances()
        async with rig() as r:
            events = timeline(r)
            expired: list[int] = []

            def expire_after_the_first_echo(call: Call, batch: list[CallEvent]) -> None:
                for e in batch:
                    text = str(e.detail.get("text", ""))
                    if e.kind == "transcript" and text.startswith("[echo") and not expired:
                        expired.append(r.agent.expire_now())

            r.bridge.services.observers.append(expire_after_the_first_echo)
            result = await call(r, audio)
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        # The stream was never closed by the bridge; exactly one replacement.
        assert result.closed_by == "caller"
        assert expired == [1]
        assert len(sessions) == 2
        assert metrics.model_reconnects == 1 and metrics.calls_failed == 0
        old, new = sessions
        assert any(e["error"]["code"] == "session_expired" for e in old.errors)
        assert unexpected_errors(sessions) == []  # no truncate (or any) error
        # The new session: configured as before, given the conversation, not greeted.
        assert (
            new.received["session.update"][0]["session"]
            == (old.received["session.update"][0]["session"])
        )
        items = [e["item"] for e in new.received.get("conversation.item.create", [])]
        for e in new.received.get("conversation.item.create", []):
            CLIENT_EVENT.validate_python(e)
        roles = [(i["role"], i["content"][0]["text"]) for i in items]
        assert any(role == "user" and text.startswith("[caller speech") for role, text in roles)
        assert any(
            role == "assistant" and text.startswith("[echo of caller speech")
            for role, text in roles
        )
        assert any(role == "assistant" and "Hello" in text for role, text in roles)  # greeting
        assert "response.create" not in new.received  # no second greeting
        kinds = [e.kind for e in events]
        assert kinds.count("model_lost") == 1 and kinds.count("model_reconnected") == 1
        # The caller hears the agent again: the new session echoes the next utterance.
        assert heard_after(first, result, 9.0) > 0.9
        assert heard_after(second, result, 17.5) > 0.9

    run_undisturbed(main())


def test_a_429_on_the_first_handshake_is_retried_and_the_call_is_normal():
    async def main() -> None:
        audio = fixture("caller-hello.wav")
        faults = Faults(refuse_status=429, refuse_first=1)
        async with rig(agent_options={"faults": faults}) as r:
            events = timeline(r)
            result = await call(r, audio)
            sessions = list(r.agent.sessions)
            assert r.agent.refused == [429]
            # The caller heard comfort noise, not dead air, until the session opened.
            (hold,) = [e for e in events if e.kind == "hold"]
            connected = next(e for e in events if e.kind == "model_connected")
            assert hold.t <= connected.t
            assert r.bridge.services.metrics.calls_failed == 0
        assert result.closed_by == "caller"
        assert len(sessions) == 1 and sessions[0].errors == []
        assert heard_after(audio[int(4.6 * RATE) : int(8.8 * RATE)], result, 9.0) > 0.9

    run_undisturbed(main())


def test_a_refused_key_is_not_retried(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        faults = Faults(refuse_status=401, refuse_first=10)
        async with rig(agent_options={"faults": faults}) as r, stream(r, 41) as s:
            code = await closed_within(s.ws)
            assert code is not None and code != 1000
            assert r.agent.refused == [401]  # one attempt only
            assert r.bridge.services.metrics.calls_failed == 1

    run_undisturbed(main())
    assert any("model unreachable" in rec.getMessage() for rec in caplog.records)


def test_when_no_new_session_can_be_opened_the_stream_is_closed_with_the_reason(caplog):
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with rig() as r, stream(r, 42) as s:
            for _ in range(5):
                await s.media()
            await until(lambda: r.agent.sessions, "the model session")
            r.agent.faults.refuse_first = 100  # the service stays down (503)
            r.agent.expire_now()
            code = await closed_within(s.ws)
            assert code is not None and code != 1000
            assert r.agent.refused == [503, 503, 503]  # the retry budget: three attempts
            assert r.bridge.services.metrics.calls_failed == 1

    run_undisturbed(main())
    assert any("model session closed" in rec.getMessage() for rec in caplog.records)


def drop_test(faults: Faults, connector_kwargs: dict[str, float] | None = None) -> None:
    async def main() -> None:
        audio = fixture("caller-hello.wav")
        async with rig(agent_options={"faults": faults}) as r:
            if connector_kwargs:
                services = r.bridge.services
                url = r.agent.url

                async def connector() -> Any:
                    return await connect_realtime(url, "gpt-realtime", None, **connector_kwargs)

                services.connector = connector
            events = timeline(r)
            result = await call(r, audio)
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        assert result.closed_by == "caller"
        assert len(sessions) >= 2 and metrics.model_reconnects == len(sessions) - 1
        assert metrics.calls_failed == 0
        assert unexpected_errors(sessions) == []
        assert any(e.kind == "model_reconnected" for e in events)
        # The utterance after the fault is echoed by a later session.
        assert heard_after(audio[int(4.6 * RATE) : int(8.8 * RATE)], result, 9.0) > 0.9

    run_undisturbed(main())


def test_a_session_cut_with_no_close_frame_is_replaced():
    drop_test(Faults(drop_after_s=1.5, drop_code=1006, sessions=1))


def test_a_session_closed_abruptly_with_1011_is_replaced():
    drop_test(Faults(drop_after_s=1.5, drop_code=1011, sessions=1))


def test_a_stalled_session_is_given_up_by_its_pings_and_replaced():
    drop_test(
        Faults(stall_after_s=1.0, sessions=1),
        connector_kwargs={"ping_interval": 0.5, "ping_timeout": 1.5},
    )


def test_a_session_that_stops_reading_is_given_up_by_the_send_timeout_and_replaced():
    """No pings to notice it: the caller's appends fill the socket, a send waits past
    MODEL_SEND_TIMEOUT_S, and the session is dropped and replaced; the call goes on."""

    async def main() -> None:
        audio = fixture("caller-hello.wav")
        async with rig(agent_options={"faults": Faults(stall_after_s=1.0, sessions=1)}) as r:
            url = r.agent.url

            async def connector() -> Any:
                model = await connect_realtime(url, "gpt-realtime", None, ping_interval=3600)
                # A small kernel send buffer: the stalled peer's window fills in seconds.
                sock = model.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                return model

            r.bridge.services.connector = connector
            events = timeline(r)
            result = await call(r, audio)
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        assert result.closed_by == "caller"
        assert metrics.peers_dropped["model"] == 1 and metrics.calls_failed == 0
        lost = [e.detail["reason"] for e in events if e.kind == "model_lost"]
        assert lost == ["the model stopped reading"]
        assert len(sessions) == 2 and metrics.model_reconnects == 1
        assert any(e.kind == "model_reconnected" for e in events)
        assert unexpected_errors(sessions) == []

    run_undisturbed(main())


def test_an_old_session_is_recycled_at_a_quiet_moment():
    async def main() -> None:
        audio = fixture("caller-hello.wav")
        settings = Settings(model_recycle_after_s=2.0)
        async with rig(settings) as r:
            events = timeline(r)
            result = await call(r, audio)
            sessions = list(r.agent.sessions)
            metrics = r.bridge.services.metrics
        assert result.closed_by == "caller"
        assert len(sessions) >= 2 and metrics.model_reconnects == len(sessions) - 1
        assert unexpected_errors(sessions) == []
        assert all(s.errors == [] for s in sessions)  # none expired: recycled before
        lost = [e.detail["reason"] for e in events if e.kind == "model_lost"]
        assert lost and set(lost) == {"recycled"}
        assert heard_after(audio[int(4.6 * RATE) : int(8.8 * RATE)], result, 9.0) > 0.9

    run_undisturbed(main())
