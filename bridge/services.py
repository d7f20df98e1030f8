"""What every call shares in one server process: settings, metrics, records, the live calls.

``Services`` lives on ``app.state.services``. It connects each call to the model (the
OpenAI Realtime API, or the built-in local agent when no key is set), keeps the registry of
live calls for draining, capacity and readiness, hands call events to observers (the
simulator's timeline, the softphone's transcript, the call's record) and counts what the
runner does not: outcomes, barge-ins, model error codes, audio out and response latency.

Records: when the app's lifespan set ``records`` (a ``RecordWriter``), every call gets a
``CallRecorder`` and its record is submitted when the call ends; the writer never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from websockets.asyncio.client import ClientConnection

from bridge.ai.client import connect_realtime
from bridge.ai.reconnect import RetryConfig
from bridge.breaker import ModelBreaker
from bridge.call import Call
from bridge.cluster import CALLER_AT_CAPACITY, Cluster, SharedBreaker
from bridge.config import Settings
from bridge.leg import INTERNAL_ERROR, TRY_AGAIN_LATER, Ending, Leg
from bridge.limits import CallerCount, ConnectLimiter
from bridge.metrics import Metrics
from bridge.runner import CallRunner, ModelConnector, Observer
from bridge.store.recorder import CallRecorder
from bridge.store.recording import RecordingFiles
from bridge.store.records import Direction
from bridge.store.writer import RecordWriter
from bridge.twilio_api import redirect_call

logger = logging.getLogger(__name__)

# Endings that mean the far end hung up: a Twilio ``stop`` and the softphone's hang-up
# (``HANGUP_REASON`` of ``bridge.phone.protocol`` and ``bridge.softphone.protocol``, not
# imported: the softphone package imports this module), or a browser gone. Other normal
# endings are "completed".
_HUNG_UP = ("caller hung up", "hung up", "browser disconnected")


@dataclass
class Services:
    settings: Settings
    model_url: str  # the Realtime endpoint calls connect to (OpenAI's or the local agent's)
    # The REST base for client secrets and speech when not OPENAI_BASE_URL (the local agent's).
    api_url: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    observers: list[Observer] = field(default_factory=list)
    calls: set[CallRunner] = field(default_factory=set)
    draining: bool = False
    connector: ModelConnector | None = None  # tests may swap the model connection
    records: RecordWriter | None = None  # set by the app's lifespan when records are on
    records_where: str | None = None  # where they go, password-free (for one log line)
    # Set by whatever knows the model cannot be reached (the breaker, or the cluster's
    # shared one): not ready, and new calls get the agent's fallback.
    model_unreachable: bool = False
    # REDIS_URL: this instance's membership of the cluster (``bridge.clustering``).
    cluster: Cluster | None = None
    shared_breaker: SharedBreaker | None = None
    # Live sessions that are not Calls (the raw Realtime proxy): they count for MAX_CALLS.
    proxied: set[object] = field(default_factory=set)
    breaker: ModelBreaker = field(init=False)
    callers: CallerCount = field(init=False)  # live calls by From (MAX_CALLS_PER_CALLER)
    connects: ConnectLimiter = field(init=False)  # new streams / Socket.IO per address
    # The record so far of each live call, by call id (the admin API reads them).
    recorders: dict[str, CallRecorder] = field(default_factory=dict)
    recordings: RecordingFiles = field(init=False)  # for agents with record = true

    def __post_init__(self) -> None:
        s = self.settings
        self.breaker = ModelBreaker(
            s.model_breaker_threshold, s.model_breaker_probe_s, self._breaker_changed
        )
        self.callers = CallerCount(s.max_calls_per_caller)
        self.connects = ConnectLimiter(s.connect_rate_per_ip, s.connect_burst_per_ip)
        self.recordings = RecordingFiles(s.recordings_dir, s.records_retention_days)

    def _breaker_changed(self, is_open: bool) -> None:
        self.model_unreachable = self.metrics.breaker_open = is_open

    @property
    def at_capacity(self) -> bool:
        return len(self.calls) + len(self.proxied) >= self.settings.max_calls

    @property
    def not_ready(self) -> str | None:
        """Why this process should not be sent calls now, or None: it takes calls."""
        if self.draining:
            return "draining"
        if self.at_capacity:
            return "at capacity"
        if self.model_unreachable:
            return "model unreachable"
        return None

    def records_summary(self) -> str:
        """One line: where this process's call records went (``bridge simulate`` prints it)."""
        writer = self.records
        if writer is None:
            return "Call records: off (set RECORDS_PATH or DATABASE_URL to keep them)"
        stats = writer.stats
        lost = stats.dropped + stats.failed
        return (
            f"Call records: {stats.written} stored in {self.records_where}"
            + (f", {lost} lost (see the log)" if lost else "")
            + (f", {stats.queued} still queued" if stats.queued else "")
        )

    async def connect_model(self) -> ClientConnection:
        s = self.settings
        return await connect_realtime(self.model_url, s.openai_realtime_model, s.openai_api_key)

    async def run_call(
        self,
        call: Call,
        leg: Leg,
        *,
        leg_name: str,
        observers: list[Observer] | None = None,
        from_number: str = "",
        to_number: str = "",
        direction: Direction = "inbound",
    ) -> Ending:
        """Run one call to its end. ``observers`` see this call's events (and the global ones).

        ``leg_name`` ("phone", "softphone") labels the call in metrics and its record;
        ``from_number``/``to_number`` are raw (the record masks them).
        """
        # The cap is per person on the other end: on an outbound call From is our own number.
        party = to_number if direction == "outbound" else from_number
        if self.cluster is not None:  # REDIS_URL: a place in the cluster's caps first
            refused = await self._cluster_admit(
                call, leg_name, party, direction, from_number, to_number
            )
            if refused is not None:
                await leg.close(refused.reason, refused.code)
                return refused
        recorder = None
        if self.records is not None or self.settings.admin_token:
            recorder = CallRecorder.for_call(
                call,
                leg=leg_name,
                now=time.monotonic(),
                wall_now=datetime.now(UTC),
                direction=direction,
                from_number=from_number,
                to_number=to_number,
            )
        runner = CallRunner(
            call,
            leg,
            self.connector or self.connect_model,
            metrics=self.metrics,
            reconnect=RetryConfig.from_settings(self.settings),
            observers=[
                *self.observers,
                *([recorder.observe] if recorder is not None else []),
                *(observers or []),
            ],
        )
        runner.leg_name = leg_name
        recording = None
        if call.agent.record:
            recording = self.recordings.open(
                call.call_sid,
                codec=call.uplink.codec,
                rate=call.uplink.rate,
                started_at=call.started_at,
            )
            runner.tap = recording
        if recorder is not None:
            self.recorders[call.call_sid] = recorder
        runner.tools.parties(from_number, to_number)
        if leg_name == "phone":  # a Twilio call: transfer_call redirects it over REST
            runner.tools.redirect = partial(redirect_call, self.settings)
        self.calls.add(runner)
        self.callers.add(party)
        self.metrics.call_started(leg_name)
        self.metrics.calls_active = len(self.calls)
        ending = Ending("internal error", INTERNAL_ERROR)
        try:
            ending = await runner.run()
            return ending
        except asyncio.CancelledError:
            ending = Ending("server shutting down", INTERNAL_ERROR)
            raise
        finally:
            self.calls.discard(runner)
            self.recorders.pop(call.call_sid, None)
            if self.cluster is not None:  # its places and registry entry go back
                await self.cluster.unregister(call.call_sid)
                await self.cluster.release(call.call_sid)
            if recording is not None:
                recording.close(time.monotonic())
            self.callers.remove(party)
            (self.shared_breaker or self.breaker).call_ended(
                call.call_sid,
                reached_model=runner.model is not None,
                unreachable=ending.model_unreachable,
            )
            self.metrics.calls_active = len(self.calls)
            if not ending.normal:
                self.metrics.calls_failed += 1
            self.metrics.call_ended(leg_name, _outcome(ending), time.monotonic() - call.started_at)
            if recorder is not None and self.records is not None:
                try:
                    for at, ms in runner.figures.answers:
                        recorder.answered(at - call.started_at, ms)
                    self.records.submit(recorder.finish(reason=ending.reason))
                except Exception:  # a record must never break the end of a call
                    logger.exception("call %s: could not build its record", call.call_sid)
            logger.info("call %s: ended: %s", call.call_sid, ending.reason)

    async def _cluster_admit(
        self,
        call: Call,
        leg_name: str,
        party: str,
        direction: Direction,
        from_number: str,
        to_number: str,
    ) -> Ending | None:
        """Take the call's places in the cluster (REDIS_URL) and list it there; or why not."""
        assert self.cluster is not None
        admission = await self.cluster.try_admit(call.call_sid, party)
        if not admission.ok:
            logger.warning("call %s: refused: %s", call.call_sid, admission.reason)
            limit = "caller_cap" if admission.reason == CALLER_AT_CAPACITY else "cluster_cap"
            self.metrics.limited[limit] += 1
            self.metrics.call_outcome("rejected_busy")
            return Ending(f"refused: {admission.reason}", TRY_AGAIN_LATER)
        await self.cluster.register(
            call.call_sid,
            leg=leg_name,
            agent=call.agent.name,
            started_at=datetime.now(UTC),
            direction=direction,
            from_number=from_number,
            to_number=to_number,
        )
        return None


def _outcome(ending: Ending) -> str:
    if not ending.normal:
        return "failed"
    if ending.reason.startswith(_HUNG_UP):
        return "caller_hung_up"
    if ending.reason.startswith("transferred to "):
        return "transferred"
    return "completed"
