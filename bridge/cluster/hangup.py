"""Remote hang-up: ask the instance that runs a call to end it, and hear whether it did.

Owns this instance's hang-up channel (``hangup:<instance id>``, Redis pub/sub) and the
subscriber task that listens on it. A request is a small JSON message
``{"call_sid", "say", "reply"}``; the owner calls its ``on_hangup(call_sid, say)`` (the
admin API's local hang-up) and pushes ``"ending"`` or ``"not_found"`` onto the one-time
reply list named in the message (``reply:<token>``, expiring on its own), which the
requester waits on with ``BLPOP``. No subscriber, no answer within
``hangup_timeout_s``, or Redis down: ``"unreachable"``.

Finding the owner is the registry's job (``bridge.cluster.registry``); ending the call is
the callback's. This module touches neither a Call nor ``Services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from redis.exceptions import RedisError

from bridge.cluster.link import RedisLink, raise_if_cancelled

logger = logging.getLogger(__name__)

HangupReply = Literal["ending", "not_found", "unreachable"]
# End this instance's call ``call_sid`` (saying ``say`` first, when given); False: no such
# live call here (it ended, or was never here).
HangupHandler = Callable[[str, str | None], Awaitable[bool]]

_REPLY_TTL_S = 30  # a reply nobody waits for any more disappears by itself
_RESUBSCRIBE_MAX_S = 5.0
_POLL_S = 1.0


async def _no_handler(call_sid: str, say: str | None) -> bool:
    return False


class HangupBus:
    """Publish hang-up requests to owners; serve this instance's channel."""

    def __init__(self, link: RedisLink, on_hangup: HangupHandler | None = None) -> None:
        self.link = link
        self.on_hangup = on_hangup or _no_handler
        self.channel = link.keys.hangup_channel(link.instance_id)
        self.subscribed = asyncio.Event()  # set while the subscription is live
        self.handled = 0

    async def request(self, owner: str, call_sid: str, say: str | None = None) -> HangupReply:
        """Ask ``owner`` (an instance id) to end ``call_sid``; wait for its answer."""
        if owner == self.link.instance_id:  # our own call: no round trip
            return "ending" if await self._handle(call_sid, say) else "not_found"
        keys = self.link.keys
        reply = keys.reply(secrets.token_hex(8))
        message = json.dumps({"call_sid": call_sid, "say": say, "reply": reply})
        timeout_s = self.link.options.hangup_timeout_s
        client = self.link.client

        async def ask() -> HangupReply:
            listeners = await client.publish(keys.hangup_channel(owner), message)
            if not listeners:
                return "unreachable"
            answer = await client.blpop([reply], timeout=timeout_s)
            if answer is None:
                return "unreachable"
            return "ending" if answer[1] == "ending" else "not_found"

        result: HangupReply = await self.link.run(
            "hang-up request",
            ask,
            "unreachable",
            timeout_s=timeout_s + self.link.options.op_timeout_s,
        )
        if result == "unreachable":
            logger.warning("call %s: hang-up: instance %s did not answer", call_sid, owner)
        return result

    async def serve(self) -> None:
        """Listen on this instance's channel until cancelled, resubscribing after errors."""
        backoff = 0.1
        while True:
            pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                backoff = 0.1
                while True:  # a timeout, not listen(): the health check runs between reads
                    raise_if_cancelled(None)  # redis-py may have swallowed our cancel
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_POLL_S
                    )
                    if message is not None and message.get("type") == "message":
                        await self._answer(message.get("data"))
            except (RedisError, OSError, TimeoutError) as exc:
                raise_if_cancelled(exc)
                self.subscribed.clear()
                self.link.failed("hang-up subscription", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RESUBSCRIBE_MAX_S)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def _answer(self, data: Any) -> None:
        try:
            request = json.loads(data)
            call_sid = str(request["call_sid"])
            reply = str(request["reply"])
            say = request.get("say")
            if not reply.startswith(self.link.keys.reply("")):
                raise ValueError("reply key outside the cluster's prefix")
        except (ValueError, TypeError, KeyError):
            logger.warning("hang-up channel: malformed request ignored")
            return
        found = await self._handle(call_sid, say if isinstance(say, str) else None)
        answer = "ending" if found else "not_found"

        async def push() -> None:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.rpush(reply, answer)
                pipe.expire(reply, _REPLY_TTL_S)
                await pipe.execute()

        await self.link.run("hang-up reply", push, None, force=True)

    async def _handle(self, call_sid: str, say: str | None) -> bool:
        self.handled += 1
        try:
            found = await self.on_hangup(call_sid, say)
        except Exception:  # a broken handler must not kill the subscriber
            logger.exception("call %s: hang-up handler failed", call_sid)
            return False
        logger.info("call %s: hang-up asked through the cluster: %s", call_sid, found)
        return found
