"""The admin API: live and past calls, their transcripts and recordings, and hang-up.

    GET  /calls?state=live|ended&leg=&agent=&limit=50&before=<cursor>
                                   {"calls": [Summary…], "next": cursor or null}, newest first
    GET  /calls/{id}               Summary + "timeline" + "usage" (live calls too)
    GET  /calls/{id}/recording     audio/wav (HTTP Range supported), 404 when none
    POST /calls                    place an outbound call (``bridge.outbound.routes``)
    POST /calls/{id}/hangup        optional {"say": "…"}: the agent says it, then the call
                                   ends once it was heard; 202 {"id", "state": "ending"},
                                   404 unknown, 409 already ended

Only with ``ADMIN_TOKEN`` set: without it ``admin_routes`` gives no routes (404, never
open). Every request needs ``Authorization: Bearer <token>`` (compared in constant time;
missing or wrong: 401). Every action is logged at INFO with the call id only: never a
number or a transcript.

Live calls come from ``Services.calls`` and the record each is building
(``Services.recorders``); ended ones from the records store (``bridge.store.db``). It must
not touch a Call's audio: a hang-up asks the call's control to end it (``CallControl.end``,
the path ``end_call`` takes) and lets the runner's pacer end it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.cluster import LiveCall
from bridge.clustering import hang_up_here
from bridge.outbound.routes import place_endpoint
from bridge.runner import CallRunner
from bridge.services import Services
from bridge.store.db import MAX_PAGE, RecordStore
from bridge.store.recording import recording_path
from bridge.store.records import CallRecord, ResponseLatency
from bridge.store.timeline_entries import keypad_and_reconnect_entries, model_sessions

logger = logging.getLogger(__name__)

_MAX_SAY_CHARS = 500
_NEAR_S = 2.0  # an answer's audio and its turn's first words come within this of each other


def admin_routes(services: Services) -> list[BaseRoute]:
    """The admin routes, or none when ``ADMIN_TOKEN`` is not set."""
    token = services.settings.admin_token
    if not token:
        return []
    api = _AdminApi(services, token)
    return [
        Route("/calls", api.guard(api.list_calls)),
        Route("/calls", api.guard(place_endpoint(services)), methods=["POST"]),  # outbound
        Route("/calls/{id}", api.guard(api.call)),
        Route("/calls/{id}/recording", api.guard(api.recording)),
        Route("/calls/{id}/hangup", api.guard(api.hangup), methods=["POST"]),
    ]


class _AdminApi:
    def __init__(self, services: Services, token: str) -> None:
        self.services = services
        self._token = token.encode()

    def guard(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            given = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._token):
                logger.warning(
                    "admin: refused %s %s (bad or missing token)", request.method, request.url.path
                )
                return _error(401, "a valid admin bearer token is required", bearer=True)
            response: Response = await handler(request)
            return response

        return endpoint

    # ------------------------------------------------------------------ routes

    async def list_calls(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state") or None
        if state not in (None, "live", "ended"):
            return _error(400, "state must be live or ended")
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            return _error(400, "limit must be a whole number")
        if not 1 <= limit <= MAX_PAGE:
            return _error(400, f"limit must be within 1..{MAX_PAGE}")
        before = None
        if q.get("before"):
            before = _decode_cursor(q["before"])
            if before is None:
                return _error(400, "before is not a cursor this API gave")
        leg, agent = q.get("leg") or None, q.get("agent") or None

        rows: list[tuple[tuple[datetime, str], dict[str, Any]]] = []
        live_ids: set[str] = set()
        if state != "ended":
            for runner, record in self._live():
                live_ids.add(record.id)
                key = (record.started_at, record.id)
                if (leg and record.leg != leg) or (agent and record.agent != agent):
                    continue
                if before is None or key < before:
                    rows.append((key, self._summary(record, runner)))
            cluster = self.services.cluster
            remotes = await cluster.live_calls() if cluster is not None else []
            for remote in remotes:
                # Calls other instances run (REDIS_URL): what the registry knows of them.
                if remote.call_sid in live_ids:
                    continue
                live_ids.add(remote.call_sid)
                key = (datetime.fromisoformat(remote.started_at), remote.call_sid)
                if (leg and remote.leg != leg) or (agent and remote.agent != agent):
                    continue
                if before is None or key < before:
                    rows.append((key, _remote_summary(remote, key[0])))
        if state != "live":
            store = self._store()
            if store is not None:
                stored = await store.page_calls(
                    before=before, agent=agent, leg=leg, limit=limit + 1
                )
                counts = await store.turn_counts([r.id for r in stored])
                for record in stored:
                    if record.id not in live_ids:
                        summary = self._summary(record, None, turns=counts.get(record.id, 0))
                        rows.append(((record.started_at, record.id), summary))
        rows.sort(key=lambda row: row[0], reverse=True)
        page = rows[:limit]
        more = len(rows) > limit
        logger.info("admin: listed %d calls (state=%s)", len(page), state or "any")
        return JSONResponse(
            {
                "calls": [summary for _, summary in page],
                "next": _encode_cursor(page[-1][0]) if more and page else None,
            }
        )

    async def call(self, request: Request) -> Response:
        call_id = request.path_params["id"]
        found = await self._find(call_id)
        if found is None:
            cluster = self.services.cluster
            remote = await cluster.find(call_id) if cluster is not None else None
            if remote is None:
                return _error(404, "no such call")
            # Live on another instance: what the cluster shares; its owner has the rest.
            body = _remote_summary(remote, datetime.fromisoformat(remote.started_at))
            body.update(timeline=[], usage=None, dtmf=[], model_sessions=[])
            logger.info("admin: read call %s (on instance %s)", call_id, remote.instance)
            return JSONResponse(body)
        record, runner = found
        body = self._summary(record, runner)
        body["timeline"] = _timeline(record, _latencies(record, runner))
        body["usage"] = {
            "input_tokens": record.usage.input_tokens,
            "output_tokens": record.usage.output_tokens,
            "total_tokens": record.usage.total_tokens,
        }
        body["dtmf"] = record.dtmf
        body["model_sessions"] = model_sessions(record)
        logger.info("admin: read call %s", call_id)
        return JSONResponse(body)

    async def recording(self, request: Request) -> Response:
        call_id = request.path_params["id"]
        path = recording_path(self.services.settings.recordings_dir, call_id)
        if not path.is_file():
            return _error(404, "no recording of this call")
        logger.info("admin: recording of call %s fetched", call_id)
        return FileResponse(path, media_type="audio/wav", filename=path.name)

    async def hangup(self, request: Request) -> Response:
        call_id = request.path_params["id"]
        say: str | None = None
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(400, "the body must be JSON")
            say = body.get("say") if isinstance(body, dict) else None
            if say is not None and (not isinstance(say, str) or len(say) > _MAX_SAY_CHARS):
                return _error(400, f"say must be text of at most {_MAX_SAY_CHARS} characters")
        say = say.strip() if say else None
        if not await hang_up_here(self.services, call_id, say):
            cluster = self.services.cluster
            # Another instance's call: its owner is asked over Redis.
            reply = await cluster.request_hangup(call_id, say) if cluster else "not_found"
            if reply == "unreachable":
                return _error(503, "the instance running the call did not answer")
            if reply != "ending":
                found = await self._find(call_id)
                return _error(409, "the call has ended") if found else _error(404, "no such call")
        logger.info("admin: hang-up of call %s asked%s", call_id, " (with a line)" if say else "")
        return JSONResponse({"id": call_id, "state": "ending"}, status_code=202)

    # ------------------------------------------------------------------ data

    def _live(self) -> list[tuple[CallRunner, CallRecord]]:
        live = []
        for runner in list(self.services.calls):
            recorder = self.services.recorders.get(runner.call.call_sid)
            if recorder is not None:
                live.append((runner, recorder.record()))
        return live

    def _runner(self, call_id: str) -> CallRunner | None:
        for runner in list(self.services.calls):
            if runner.call.call_sid == call_id:
                return runner
        return None

    def _store(self) -> RecordStore | None:
        writer = self.services.records
        if writer is None:
            return None
        sink = writer.sink
        store = getattr(sink, "store", sink)  # a store that was down at start-up is wrapped
        return store if isinstance(store, RecordStore) else None

    async def _find(self, call_id: str) -> tuple[CallRecord, CallRunner | None] | None:
        runner = self._runner(call_id)
        recorder = self.services.recorders.get(call_id)
        if runner is not None and recorder is not None:
            return recorder.record(), runner
        store = self._store()
        record = await store.get(call_id) if store is not None else None
        return (record, None) if record is not None else None

    def _summary(
        self, record: CallRecord, runner: CallRunner | None, *, turns: int | None = None
    ) -> dict[str, Any]:
        live = runner is not None
        ended_at = None if live else record.ended_at
        duration = (
            (datetime.now(UTC) - record.started_at).total_seconds() if live else record.duration_s
        )
        path = recording_path(self.services.settings.recordings_dir, record.id)
        return {
            "id": record.id,
            "leg": runner.leg_name or record.leg if runner is not None else record.leg,
            "direction": record.direction,
            "agent": record.agent,
            "from": record.from_,
            "to": record.to,
            "state": "live" if live else "ended",
            "started_at": record.started_at.isoformat(),
            "answered_at": _iso(record.answered_at),
            "ended_at": _iso(ended_at),
            "duration_s": None if duration is None else round(duration, 3),
            "end_reason": None if live else record.end_reason,
            "turns": len(record.turns) if turns is None else turns,
            "barge_ins": len(record.barge_ins),
            "latency_ms": _median(_latencies(record, runner)),
            "has_recording": path.is_file(),
            "reconnects": record.reconnects,
            "tool_calls": len(record.tool_calls),
        }


def _remote_summary(call: LiveCall, started_at: datetime) -> dict[str, Any]:
    """A live call of another instance, in the shape of a summary (what is not shared:
    None)."""
    duration = (datetime.now(UTC) - started_at).total_seconds()
    return {
        "id": call.call_sid,
        "leg": call.leg,
        "direction": call.direction,
        "agent": call.agent,
        "from": call.from_,
        "to": call.to,
        "state": "live",
        "started_at": started_at.isoformat(),
        "answered_at": None,
        "ended_at": None,
        "duration_s": round(duration, 3),
        "end_reason": None,
        "turns": None,
        "barge_ins": None,
        "latency_ms": None,
        "has_recording": False,
        "reconnects": None,
        "tool_calls": None,
        "instance": call.instance,
    }


def _latencies(record: CallRecord, runner: CallRunner | None) -> list[ResponseLatency]:
    """The call's response latencies: a live call's from its runner, else the record's."""
    if runner is None:
        return list(record.latencies)
    start = runner.call.started_at
    return [
        ResponseLatency(record.started_at + timedelta(seconds=at - start), ms)
        for at, ms in list(runner.figures.answers)
    ]


def _median(latencies: list[ResponseLatency]) -> float | None:
    return round(statistics.median(x.ms for x in latencies), 1) if latencies else None


def _timeline(record: CallRecord, latencies: list[ResponseLatency]) -> list[dict[str, Any]]:
    """Turns, barge-ins and tool calls in time order. Each answer's latency goes to the
    agent turn that began nearest to when its audio reached the caller."""
    origin = record.started_at
    agent_turns = [turn for turn in record.turns if turn.role == "assistant"]
    latency_of: dict[int, float] = {}
    for answer in latencies:
        near = min(
            agent_turns,
            key=lambda turn: abs((turn.started_at - answer.at).total_seconds()),
            default=None,
        )
        if near is not None and abs((near.started_at - answer.at).total_seconds()) < _NEAR_S:
            latency_of.setdefault(id(near), answer.ms)

    def at(when: datetime | None) -> float:
        return 0.0 if when is None else round((when - origin).total_seconds(), 3)

    entries: list[dict[str, Any]] = []
    for turn in record.turns:
        entries.append(
            {
                "t": at(turn.started_at),
                "kind": "caller" if turn.role == "user" else "agent",
                "text": turn.text,
                "truncated": turn.truncated,
                "latency_ms": _round(latency_of.get(id(turn))),
                "detail": {"heard_ms": turn.heard_ms} if turn.truncated else {},
            }
        )
    for barge in record.barge_ins:
        entries.append(
            {
                "t": at(barge.at),
                "kind": "barge_in",
                "text": None,
                "truncated": False,
                "latency_ms": None,
                "detail": {"trigger": barge.trigger, "audio_end_ms": barge.audio_end_ms},
            }
        )
    for tool in record.tool_calls:
        entries.append(
            {
                "t": at(tool.at),
                "kind": "tool_call",
                "text": None,
                "truncated": False,
                "latency_ms": round(tool.latency_ms, 1),
                "detail": {"name": tool.name, "outcome": tool.outcome},
            }
        )
    entries.extend(keypad_and_reconnect_entries(record))
    entries.sort(key=lambda entry: float(entry["t"]))
    return entries


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _encode_cursor(key: tuple[datetime, str]) -> str:
    raw = f"{key[0].isoformat()}|{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, call_id = raw.split("|", 1)
        when = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if when.tzinfo is None or not call_id:
        return None
    return when.astimezone(UTC), call_id


def _error(status: int, message: str, *, bearer: bool = False) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
