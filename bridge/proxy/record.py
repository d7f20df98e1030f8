"""A proxied Realtime session seen as a call's timeline, for records and metrics. Pure.

The proxy has no Call; what the model says (GA server events) and a few client events
are turned into the ``CallEvent`` kinds ``bridge.store.recorder.CallRecorder`` reads, so
a proxied session gets a record like every other leg: answer time, user and assistant
turns, barge-ins (the client's ``conversation.item.truncate``, confirmed by the model),
token usage and model errors.
"""

from __future__ import annotations

from typing import Any

from bridge.timeline import CallEvent


def from_server(event: dict[str, Any], t: float) -> list[CallEvent]:
    """Timeline events for one GA server event at ``t`` seconds into the session."""
    match event.get("type"):
        case "session.created":
            return [CallEvent(t, "model_connected")]
        case "input_audio_buffer.speech_started":
            return [CallEvent(t, "speech_started")]
        case "conversation.item.input_audio_transcription.completed":
            return [CallEvent(t, "transcript", {"role": "user", "text": _s(event, "transcript")})]
        case "response.output_audio_transcript.delta" | "response.output_text.delta":
            detail = {
                "role": "assistant",
                "text": _s(event, "delta"),
                "item_id": event.get("item_id"),
            }
            return [CallEvent(t, "transcript_delta", detail)]
        case "response.output_audio_transcript.done":
            detail = {
                "role": "assistant",
                "text": _s(event, "transcript"),
                "item_id": event.get("item_id"),
            }
            return [CallEvent(t, "transcript", detail)]
        case "response.output_text.done":
            detail = {
                "role": "assistant",
                "text": _s(event, "text"),
                "item_id": event.get("item_id"),
            }
            return [CallEvent(t, "transcript", detail)]
        case "conversation.item.truncated":
            detail = {
                "trigger": "client",
                "item_id": event.get("item_id"),
                "audio_end_ms": event.get("audio_end_ms"),
            }
            return [CallEvent(t, "barge_in", detail)]
        case "response.done":
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            return [CallEvent(t, "response_done", {"usage": usage} if usage else {})]
        case "error":
            error = event.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            return [CallEvent(t, "model_error", {"code": code})]
        case _:
            return []


def from_client(event: dict[str, Any], t: float) -> list[CallEvent]:
    """Timeline events for a (GA) client event: typed user text becomes a user turn."""
    item = event.get("item")
    if event.get("type") != "conversation.item.create" or not isinstance(item, dict):
        return []
    if item.get("role") != "user" or not isinstance(item.get("content"), list):
        return []
    texts = [
        p["text"]
        for p in item["content"]
        if isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)
    ]
    return [CallEvent(t, "user_text", {"text": " ".join(texts)})] if texts else []


def _s(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""
