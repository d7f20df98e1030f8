"""The minimal relay: a call the caller hangs up is over, not failed."""

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.websockets import WebSocketDisconnect

from bridge.bench.relay import Relay
from bridge.bench.server import bench_settings


class GoneCaller:
    """Twilio's side of a call whose caller hung up while the relay was sending to it."""

    def __init__(self) -> None:
        self.sends = 0

    async def send_text(self, text: str) -> None:
        self.sends += 1
        raise WebSocketDisconnect(1006)


async def speaking_model() -> AsyncIterator[str]:
    yield orjson.dumps({"type": "response.output_audio.delta", "delta": "AAAA"}).decode()


def test_a_caller_gone_while_audio_is_sent_ends_the_downlink_quietly() -> None:
    relay = Relay(bench_settings(0), "ws://127.0.0.1:9/v1/realtime")
    caller = GoneCaller()
    # Raising here would count the call as failed (``Relay.media``): its stop may still
    # be queued for the uplink when the send finds the caller gone.
    asyncio.run(relay._downlink(caller, speaking_model(), "MZ00"))  # type: ignore[arg-type]
    assert caller.sends == 1
    assert relay.metrics.calls_failed == 0
