"""Errors raised by the Twilio caller simulator.

    BridgeError
    └── SimulatorError          the simulated call could not go on as Twilio's would
        ├── TwilioWouldReject   the bridge sent a stream message Twilio rejects (31950/31951)
        ├── WebhookRejected     the voice webhook did not answer 200 with usable TwiML
        └── StreamRejected      the media WebSocket handshake was refused

The simulator is a test double for Twilio's cloud, not part of the media plane, but its
errors hang off the project's one root so callers can catch them the same way.
"""

from bridge.errors import BridgeError


class SimulatorError(BridgeError):
    """The simulated Twilio side cannot accept what the bridge did."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TwilioWouldReject(SimulatorError):
    """A message from the bridge that Twilio would refuse.

    ``code`` is the Twilio debugger code it would log: 31950 (malformed: binary frame)
    or 31951 (invalid: not JSON, unknown event, wrong fields, wrong streamSid, bad payload).
    See https://www.twilio.com/docs/api/errors/31950 and /31951.
    """

    def __init__(self, reason: str, *, code: int = 31951) -> None:
        super().__init__(reason)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class WebhookRejected(SimulatorError):
    """The voice webhook answered with a non-200 status or TwiML Twilio cannot run."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.status_code = status_code


class StreamRejected(SimulatorError):
    """The bridge refused the media WebSocket handshake (Twilio would log 31920)."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.status_code = status_code
