"""Fuzzed raw PCM voice clients beside a good one, over real loopback sockets.

The bridge and the local agent run on a loop in a background thread
(``tests.proxy.test_proxy_e2e_fuzz.serving``); Hypothesis runs in the test's thread. Each
example opens one more ``/ws/voice`` call and sends it generated frames (binary of any
length, text of any kind), then a text frame as a marker: each frame the parser refuses
gets exactly one ``error`` event, in order, and the call stays up. The bridge must log no
error; the good call, open before and after, must keep its agent audio and get no error.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.errors import PhoneProtocolError
from bridge.wsvoice.protocol import parse_frame
from tests.phone.test_phone_fuzz import PATHOLOGICAL_TEXT
from tests.proxy.test_proxy_e2e_fuzz import PATIENCE_S, serving
from tests.softphone.helpers import utterance
from tests.wsvoice.helpers import VoiceClient, ws_url

EXAMPLES = max(10, hypothesis_settings().max_examples // 3)
# Small enough that four of them stay within the audio budget's burst.
FRAMES = st.lists(
    st.binary(max_size=2000)
    | st.text(max_size=40)
    | PATHOLOGICAL_TEXT.filter(lambda t: len(t) < 2000),
    min_size=1,
    max_size=4,
)


def refused(frame: str | bytes, max_bytes: int) -> bool:
    message = {"bytes": frame} if isinstance(frame, bytes) else {"text": frame}
    try:
        parse_frame(message, max_bytes)
    except PhoneProtocolError:
        return True
    return False


async def fuzz_one(url: str, frames: list[str | bytes], max_bytes: int) -> None:
    client = await VoiceClient.open(ws_url(url))
    try:
        expected = sum(refused(f, max_bytes) for f in frames) + 1
        for frame in frames:
            await client.ws.send(frame)
        await client.ws.send("fuzz.marker")
        await client.wait_for(
            lambda: len(client.of("error")) >= expected or client.closed.is_set(), "the errors"
        )
        assert not client.closed.is_set()
        assert len(client.of("error")) == expected, client.of("error")
    finally:
        await client.close()


async def good_client(url: str) -> VoiceClient:
    client = await VoiceClient.open(ws_url(url))
    await client.wait_for(lambda: client.named("AIConnected") and client.audio, "agent audio")
    return client


async def still_good(client: VoiceClient) -> None:
    """The good call still answers: caller speech gets a new response with its audio.

    (Not just "more audio": the greeting is over once the fuzzing took longer than it, as
    it does under the long budget, and silence alone gets no answer.)"""
    starts = len(client.named("AIResponseStart"))
    await client.send_audio(utterance(client.rate)[: client.rate])  # 1 s of speech
    listening = asyncio.create_task(client.send_audio(np.zeros(client.rate * 10, np.int16)))
    try:
        await client.wait_for(lambda: len(client.named("AIResponseStart")) > starts, "an answer")
        heard = len(client.audio)  # the answer's echo is paced: most of it is still to come
        await client.wait_for(lambda: len(client.audio) > heard, "the answer's audio")
    finally:
        listening.cancel()
    assert not client.closed.is_set() and not client.of("error"), client.events
    await client.close()


def test_fuzzed_voice_clients_leave_a_good_call_alone(caplog):
    caplog.set_level(logging.WARNING)
    with serving(Settings()) as (lt, bridge):
        max_bytes = bridge.services.settings.max_message_bytes
        good = lt.run(good_client(bridge.base_url), PATIENCE_S)

        @hypothesis_settings(max_examples=EXAMPLES)
        @given(frames=FRAMES)
        def fuzz(frames: list[str | bytes]) -> None:
            lt.run(fuzz_one(bridge.base_url, frames, max_bytes), PATIENCE_S)

        fuzz()
        lt.run(still_good(good), PATIENCE_S)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
