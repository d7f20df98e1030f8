"""Calls to the REST API (``OPENAI_BASE_URL``, or the local agent's): client secrets and
speech, with ``httpx``. Failures become ``RestError`` with a message fit for the client
(the service's own message, never the key)."""

from __future__ import annotations

from typing import Any

import httpx

TIMEOUT_S = 20.0
SPEECH_MODEL = "gpt-4o-mini-tts"


class RestError(Exception):
    pass


async def mint_client_secret(
    client: httpx.AsyncClient, base_url: str, key: str, session: dict[str, Any], seconds: int
) -> dict[str, Any]:
    """POST /realtime/client_secrets → ``{value, expires_at, session}``."""
    body = {"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": session}
    answer = await _post(client, f"{base_url}/realtime/client_secrets", key, body)
    data = answer.json()
    if not isinstance(data, dict) or not isinstance(data.get("value"), str):
        raise RestError("the client-secrets endpoint gave no secret")
    return data


async def speech(
    client: httpx.AsyncClient, base_url: str, key: str, text: str, voice: str, fmt: str
) -> bytes:
    """POST /audio/speech → the audio bytes (``fmt``: wav or pcm, 24 kHz)."""
    body = {"model": SPEECH_MODEL, "input": text, "voice": voice, "response_format": fmt}
    return (await _post(client, f"{base_url}/audio/speech", key, body)).content


async def _post(
    client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]
) -> httpx.Response:
    try:
        answer = await client.post(
            url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise RestError(f"the API is unreachable ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise RestError(f"the API refused ({answer.status_code}): {_message(answer)}")
    return answer


def _message(answer: httpx.Response) -> str:
    try:
        error = answer.json().get("error") or {}
        return str(error.get("message") or "no reason given")[:200]
    except (ValueError, AttributeError):
        return "no reason given"
