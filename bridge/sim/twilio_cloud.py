"""A Twilio REST stand-in on loopback, for tests and ``bridge simulate``.

``TwilioCloud`` is a real HTTP server (stdlib ``ThreadingHTTPServer`` in a background
thread, so sync tests, async code and the blocking ``twilio`` SDK can all use it) that
answers the few resources the bridge uses the way api.twilio.com does: HTTP Basic auth
(401 otherwise), method and path, form-encoded bodies, strict parameter checks (unknown
parameters are refused with a Twilio-like error JSON, so a typo in our code fails a test)
and JSON resources shaped like Twilio's:

    POST /2010-04-01/Accounts/{AccountSid}/Calls.json                  create (201)
    GET|POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json    fetch / update
    GET  /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json   list (paged)
    GET|POST /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json

Every request is recorded in ``requests``. ``fail_next`` makes the next requests fail
(500, …); ``on_call_update`` callbacks run (in the server thread) after a call update so a
simulated caller can end its media stream as Twilio does after a redirect.

Owns only this stand-in (its rules as data are in ``bridge.sim.twilio_rules``); it never
imports the rest of the bridge, so it checks our requests from the outside. From async
code, wait with ``await cloud.wait_for_async(…)``. https://www.twilio.com/docs/usage/api
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bridge.sim.twilio_rules import (
    API,
    CALL_CREATE_PARAMS,
    CALL_UPDATE_PARAMS,
    LIVE,
    NUMBER_LIST_PARAMS,
    NUMBER_UPDATE_PARAMS,
    ApiError,
    allow,
    call_resource,
    check_common,
    known,
    new_sid,
    number_resource,
    parse_int,
    snake,
)

__all__ = ["ApiError", "RecordedRequest", "TwilioCloud", "new_sid"]

CallUpdateHook = Callable[[str, dict[str, str]], None]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]  # last value of each field; ``form_lists`` has repeats
    form_lists: dict[str, list[str]]
    auth_ok: bool
    status: int = 0  # the HTTP status answered


@dataclass
class _Failure:
    status: int
    code: int
    message: str


@dataclass
class TwilioCloud:
    """The stand-in; use as ``with TwilioCloud() as cloud:`` (or ``start``/``close``)."""

    account_sid: str = field(default_factory=lambda: new_sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    page_size: int = 50
    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_call_update: list[CallUpdateHook] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> TwilioCloud:
        cloud = self

        class Handler(_Handler):
            owner = cloud

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TwilioCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- seeding and faults ----------------------------------------------------------

    def add_call(
        self, sid: str | None = None, *, to: str = "+15550001111", from_: str = "+15550002222"
    ) -> str:
        """A live inbound call (as if Twilio had answered it) that can then be updated."""
        sid = sid or new_sid("CA")
        with self._cond:
            self.calls[sid] = call_resource(
                self.account_sid, sid, to, from_, "in-progress", "inbound"
            )
        return sid

    def add_number(
        self, phone_number: str, *, voice_url: str = "", friendly_name: str | None = None
    ) -> str:
        sid = new_sid("PN")
        with self._cond:
            self.numbers[sid] = number_resource(
                self.account_sid, sid, phone_number, voice_url, friendly_name
            )
        return sid

    def on_redirect(self, call_sid: str, callback: Callable[[], object]) -> None:
        """``callback()`` (in the server thread) once ``call_sid`` is redirected (Twiml or
        Url) or ended: when Twilio would stop the call's media stream."""

        def hook(sid: str, form: dict[str, str]) -> None:
            if sid == call_sid and ({"Twiml", "Url"} & set(form) or "Status" in form):
                callback()

        self.on_call_update.append(hook)

    def fail_next(
        self, status: int = 500, *, code: int = 20500, message: str = "Internal Server Error"
    ) -> None:
        """The next authenticated request gets this error (call again for more)."""
        with self._cond:
            self._failures.append(_Failure(status, code, message))

    # -- waiting ----------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10.0
    ) -> RecordedRequest:
        """The first recorded request matching ``predicate`` (blocks; TimeoutError)."""
        with self._cond:
            found: list[RecordedRequest] = []

            def ready() -> bool:
                found[:] = [r for r in self.requests if r.status and predicate(r)]
                return bool(found)

            if not self._cond.wait_for(ready, timeout):
                raise TimeoutError("the Twilio stand-in got no such request")
            return found[0]

    async def wait_for_async(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10.0
    ) -> RecordedRequest:
        """``wait_for`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def call_updates(self, sid: str | None = None) -> list[RecordedRequest]:
        pattern = re.compile(rf"{API}/Accounts/AC\w+/Calls/(CA\w+)\.json$")
        with self._cond:
            return [
                r
                for r in self.requests
                if r.method == "POST"
                and (m := pattern.match(r.path))
                and (sid is None or m.group(1) == sid)
            ]

    # -- resources ---------------------------------------------------------------------

    def handle(self, req: RecordedRequest) -> tuple[int, dict[str, Any]]:
        """Answer one authenticated request: (status, JSON body). Raises ApiError."""
        base = f"{API}/Accounts/{self.account_sid}"
        if not req.path.startswith(base + "/"):
            raise ApiError(404, 20404, f"The requested resource {req.path} was not found")
        rest = req.path[len(base) :]
        with self._cond:
            if self._failures:
                failure = self._failures.pop(0)
                raise ApiError(failure.status, failure.code, failure.message)
            if rest == "/Calls.json":
                allow(req, {"POST"})
                return 201, self._create_call(req.form)
            if m := re.fullmatch(r"/Calls/(CA[0-9a-f]{32})\.json", rest):
                allow(req, {"GET", "POST"})
                return 200, self._call(req, m.group(1))
            if rest == "/IncomingPhoneNumbers.json":
                allow(req, {"GET"})
                return 200, self._list_numbers(req.query)
            if m := re.fullmatch(r"/IncomingPhoneNumbers/(PN[0-9a-f]{32})\.json", rest):
                allow(req, {"GET", "POST"})
                return 200, self._number(req, m.group(1))
        raise ApiError(404, 20404, f"The requested resource {req.path} was not found")

    def _create_call(self, form: dict[str, str]) -> dict[str, Any]:
        known(form, CALL_CREATE_PARAMS)
        if not form.get("To"):
            raise ApiError(400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            raise ApiError(400, 21213, "No 'From' number is specified")
        if not any(form.get(k) for k in ("Url", "Twiml", "ApplicationSid")):
            raise ApiError(400, 21205, "Url, Twiml or ApplicationSid is required")
        check_common(form)
        sid = new_sid("CA")
        call = call_resource(
            self.account_sid, sid, form["To"], form["From"], "queued", "outbound-api"
        )
        self.calls[sid] = call
        return call

    def _call(self, req: RecordedRequest, sid: str) -> dict[str, Any]:
        call = self.calls.get(sid)
        if call is None:
            raise ApiError(404, 20404, f"The requested resource {req.path} was not found")
        if req.method == "GET":
            return call
        form = req.form
        known(form, CALL_UPDATE_PARAMS)
        if not form:
            raise ApiError(400, 20001, "Nothing to update")
        check_common(form)
        status = form.get("Status")
        if status is not None and status not in {"completed", "canceled"}:
            raise ApiError(400, 21218, f"Invalid Status {status!r}: completed or canceled")
        if call["status"] not in LIVE:
            raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status:
            call["status"] = status
        call["date_updated"] = formatdate(usegmt=True)
        for hook in list(self.on_call_update):
            hook(sid, dict(form))
        return call

    def _list_numbers(self, query: dict[str, str]) -> dict[str, Any]:
        known(query, NUMBER_LIST_PARAMS)
        size = parse_int(query.get("PageSize", str(self.page_size)), "PageSize", 1, 1000)
        page = parse_int(query.get("Page", "0"), "Page", 0, 10_000)
        rows = [
            n
            for n in self.numbers.values()
            if query.get("PhoneNumber", "") in n["phone_number"]
            and query.get("FriendlyName", "") in n["friendly_name"]
        ]
        chunk = rows[page * size : (page + 1) * size]
        uri = f"{API}/Accounts/{self.account_sid}/IncomingPhoneNumbers.json"

        def page_uri(n: int) -> str:
            return f"{uri}?{urlencode({'PageSize': size, 'Page': n})}"

        more = (page + 1) * size < len(rows)
        return {
            "incoming_phone_numbers": chunk,
            "end": page * size + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) + "&PageToken=PT" + str(page + 1) if more else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": page_uri(page - 1) if page else None,
            "start": page * size,
            "uri": page_uri(page),
        }

    def _number(self, req: RecordedRequest, sid: str) -> dict[str, Any]:
        number = self.numbers.get(sid)
        if number is None:
            raise ApiError(404, 20404, f"The requested resource {req.path} was not found")
        if req.method == "POST":
            known(req.form, NUMBER_UPDATE_PARAMS)
            check_common(req.form)
            for key, value in req.form.items():
                number[snake(key)] = value
            number["date_updated"] = formatdate(usegmt=True)
        return number


class _Handler(BaseHTTPRequestHandler):
    owner: TwilioCloud
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded, not logged

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        cloud = self.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        form_lists = parse_qs(raw, keep_blank_values=True)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        req = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=query,
            form={k: v[-1] for k, v in form_lists.items()},
            form_lists=form_lists,
            auth_ok=self._auth_ok(),
        )
        try:
            if not req.auth_ok:
                raise ApiError(401, 20003, "Authenticate")
            content_type = self.headers.get("Content-Type", "")
            if raw and not content_type.startswith("application/x-www-form-urlencoded"):
                raise ApiError(400, 20001, f"Unsupported Content-Type {content_type!r}")
            status, body = cloud.handle(req)
        except ApiError as exc:
            status, body = exc.status, exc.body()
        data = json.dumps(body).encode()
        # Recorded before the answer leaves: a client that got its answer finds its request.
        with cloud._cond:
            req.status = status
            cloud.requests.append(req)
            cloud._cond.notify_all()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
        self.end_headers()
        self.wfile.write(data)

    def _auth_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        owner = self.owner
        return secrets.compare_digest(user, owner.account_sid) and secrets.compare_digest(
            password, owner.auth_token
        )
