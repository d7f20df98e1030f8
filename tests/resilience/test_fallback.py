"""The agent's fallback when the model cannot be reached: its configuration, its TwiML, the
``<Connect action>`` that carries it after the stream, and the open-door refusal."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bridge.agents import Agent, Fallback
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.local_agent import Faults
from bridge.sim.webhook import voice_params
from tests.e2e import rig, run_undisturbed
from tests.resilience.helpers import ACCOUNT, CALLED, CALLER, post_after, post_signed, voice
from tests.test_e2e_robustness import closed_within, stream
from twiml.fallback import fallback_twiml

SETTINGS = Settings()


def verbs(twiml: str) -> list[tuple[str, str | None, dict[str, str]]]:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return [(e.tag, (e.text or "").strip() or None, dict(e.attrib)) for e in root]


def test_without_a_fallback_the_caller_hears_the_unavailable_message_then_a_hang_up():
    twiml = fallback_twiml(Agent(), SETTINGS.with_(unavailable_message="Sorry."))
    assert [(t, text) for t, text, _ in verbs(twiml)] == [("Say", "Sorry."), ("Hangup", None)]


def test_each_kind_of_fallback_becomes_its_twiml():
    say = fallback_twiml(Agent(fallback=Fallback("say", "Call back at 9.")), SETTINGS)
    assert [(t, x) for t, x, _ in verbs(say)] == [("Say", "Call back at 9."), ("Hangup", None)]
    redirect = fallback_twiml(
        Agent(fallback=Fallback("redirect", "https://x.example/ivr")), SETTINGS
    )
    assert verbs(redirect) == [("Redirect", "https://x.example/ivr", {"method": "POST"})]
    for target, noun in (("+15557654321", "Number"), ("sip:desk@pbx.example.com", "Sip")):
        root = ET.fromstring(fallback_twiml(Agent(fallback=Fallback("dial", target)), SETTINGS))
        (dial,) = list(root)
        assert dial.tag == "Dial" and [(n.tag, n.text) for n in dial] == [(noun, target)]


def agents_file(tmp_path: Path, fallback: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(f"[agents.desk]\nnumbers = ['+15550002222']\nfallback = {fallback}\n")
    return path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('{say = "Back soon."}', Fallback("say", "Back soon.")),
        ('{redirect = "https://x.example/ivr"}', Fallback("redirect", "https://x.example/ivr")),
        ('{dial = "+15557654321"}', Fallback("dial", "+15557654321")),
        ('{dial = "sip:desk@pbx.example.com"}', Fallback("dial", "sip:desk@pbx.example.com")),
    ],
)
def test_the_agents_file_sets_a_fallback(tmp_path: Path, spec: str, expected: Fallback):
    s = Settings.from_env({"AGENTS_FILE": str(agents_file(tmp_path, spec))}, env_file=None)
    desk = s.agent("desk")
    assert desk is not None and desk.fallback == expected


@pytest.mark.parametrize(
    "spec",
    [
        '"hang up"',
        '{say = "a", dial = "+15557654321"}',
        '{sing = "la"}',
        '{redirect = "ftp://x.example/"}',
        '{dial = "555-1234"}',
        '{dial = ""}',
    ],
)
def test_a_bad_fallback_fails_at_start_up_naming_the_agent(tmp_path: Path, spec: str):
    with pytest.raises(ConfigError, match=r"agents\.desk.*fallback"):
        Settings.from_env({"AGENTS_FILE": str(agents_file(tmp_path, spec))}, env_file=None)


def test_a_real_key_without_signature_checks_refuses_to_start_unless_told_it_is_a_test():
    with pytest.raises(ConfigError, match="ALLOW_UNSIGNED_WEBHOOKS"):
        Settings.from_env({"OPENAI_API_KEY": "sk-x"}, env_file=None)
    assert Settings.from_env(
        {"OPENAI_API_KEY": "sk-x", "ALLOW_UNSIGNED_WEBHOOKS": "1"}, env_file=None
    ).allow_unsigned_webhooks
    signed = {"OPENAI_API_KEY": "sk-x", "TWILIO_AUTH_TOKEN": "t", "PUBLIC_URL": "https://h.io"}
    assert Settings.from_env(signed, env_file=None).twilio_auth_token == "t"
    assert Settings.from_env({}, env_file=None).openai_api_key is None  # local agent: fine


DESK = Agent(name="desk", fallback=Fallback("dial", "+15557654321"), numbers=("+15550002222",))


def test_a_call_whose_model_stays_down_gets_its_agents_fallback_after_the_stream():
    async def main() -> None:
        settings = Settings(agents=(DESK,), default_agent="desk", model_retry_budget_s=0.5)
        faults = Faults(refuse_status=503, refuse_first=1000)
        async with rig(settings, agent_options={"faults": faults}) as r:
            twiml = await voice(r, "CA" + "a" * 32)
            (connect,) = [e for e in ET.fromstring(twiml) if e.tag == "Connect"]
            action = connect.get("action")
            assert action is not None
            parts = urllib.parse.urlsplit(action)
            assert f"{parts.scheme}://{parts.netloc}" == r.bridge.public_url
            assert parts.path == "/twilio/after"
            assert urllib.parse.parse_qs(parts.query) == {"agent": ["desk"]}
            assert [e.tag for e in ET.fromstring(twiml)] == ["Connect"]  # nothing after it
            async with stream(r, 7) as s:
                code = await closed_within(s.ws)
                assert code is not None and code != 1000
            assert r.agent.refused, "the model was tried"
            # Twilio asks the action what to do next: the agent's fallback, the human desk.
            after = await post_after(r, f"CA{7:032d}", f"{parts.path}?{parts.query}")
            (dial,) = list(ET.fromstring(after))
            assert dial.tag == "Dial" and dial[0].tag == "Number"
            assert dial[0].text == "+15557654321"

    run_undisturbed(main())


def test_after_a_normal_end_the_action_hangs_up_and_a_forged_action_is_refused():
    async def main() -> None:
        async with rig(Settings(agents=(DESK,), default_agent="desk")) as r:
            async with stream(r, 8) as s:
                for _ in range(10):
                    await s.media()
                await s.stop()
                await closed_within(s.ws)
            after = await post_after(r, f"CA{8:032d}", "/twilio/after?agent=desk")
            assert [e.tag for e in ET.fromstring(after)] == ["Hangup"]
            # Signed for another agent name than the one asked for: refused.
            params = voice_params(f"CA{8:032d}", ACCOUNT, CALLER, CALLED)
            status, _ = await post_signed(
                r,
                "/twilio/after?agent=default",
                params,
                signed_path="/twilio/after?agent=desk",
            )
            assert status == 403

    run_undisturbed(main())
