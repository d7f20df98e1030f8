"""Every error the bridge raises on purpose.

    BridgeError
    ├── ConfigError            a setting is missing or malformed (names the variable)
    ├── ProtocolError          a peer broke its wire protocol
    │   ├── PhoneProtocolError     Twilio Media Streams / softphone message we cannot accept
    │   └── RealtimeProtocolError  Realtime API event we cannot accept
    ├── SecurityError          a signature or stream token did not check out
    └── SessionClosed          a leg (phone or model) went away

Protocol errors carry the reason in plain words; the I/O shells log them once with
the call sid and either drop the frame or close the call.
"""


class BridgeError(Exception):
    """Root of every error raised by the bridge."""


class ConfigError(BridgeError):
    """A setting is missing or malformed; the message names the variable."""


class ProtocolError(BridgeError):
    """A peer sent something its protocol does not allow.

    ``fatal`` says whether the session must close (True) or the frame can be dropped.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class PhoneProtocolError(ProtocolError):
    """A Twilio Media Streams (or softphone) message we cannot accept."""


class RealtimeProtocolError(ProtocolError):
    """A Realtime API server event we cannot accept."""


class SecurityError(BridgeError):
    """A webhook signature or a stream token did not check out."""


class SessionClosed(BridgeError):
    """A leg of the call (phone or model) has gone away."""
