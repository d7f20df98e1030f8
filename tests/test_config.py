from pathlib import Path

import pytest

from bridge.agents import DEFAULT_GREETING
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sim.caller import simulate_call
from tests.e2e import rig, run_undisturbed, silence


def test_defaults_need_no_keys():
    s = Settings.from_env({}, env_file=None)
    assert s.uses_local_agent
    assert s.openai_realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.openai_realtime_model == "gpt-realtime"
    assert s.agent_for("+15551234567").name == "default"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PUBLIC_URL": "abc.ngrok.app"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://abc.ngrok.app/?x=1"}, "PUBLIC_URL"),
        ({"OPENAI_REALTIME_URL": "https://api.openai.com/v1/realtime"}, "OPENAI_REALTIME_URL"),
        ({"OPENAI_VOICE": "robot"}, "OPENAI_VOICE"),
        ({"PLAYOUT_LEAD_MS": "5"}, "PLAYOUT_LEAD_MS"),
        ({"UPLINK_BATCH_MS": "50"}, "UPLINK_BATCH_MS"),
        ({"UPLINK_BATCH_MS": "400"}, "UPLINK_BATCH_MS"),
        ({"MODEL_AUDIO_FORMAT": "pcma"}, "MODEL_AUDIO_FORMAT"),
        ({"TWILIO_AUTH_TOKEN": "secret"}, "PUBLIC_URL"),
        ({"AGENTS_FILE": "/nonexistent/agents.toml"}, "AGENTS_FILE"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env, env_file=None)


def test_env_file_is_read_and_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nPORT=9000\nexport HOST='0.0.0.0'\nOPENAI_VOICE=cedar\n")
    s = Settings.from_env({"PORT": "9001"}, env_file=env_file)
    assert (s.port, s.host, s.agents[0].voice) == (9001, "0.0.0.0", "cedar")


def test_secrets_stay_out_of_repr():
    s = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": "tw-secret",
            "OPENAI_API_KEY": "sk-secret",
            "PUBLIC_URL": "https://x.ngrok.app",
            "STREAM_TOKEN_SECRET": "st-secret",
        },
        env_file=None,
    )
    text = repr(s)
    assert "tw-secret" not in text and "sk-secret" not in text and "st-secret" not in text


def test_agents_file_routes_numbers_and_sip_users(tmp_path: Path):
    agents = tmp_path / "agents.toml"
    agents.write_text(
        """
default = "front"
[agents.front]
greeting = "Welcome."
[agents.support]
instructions = "You are support."
voice = "cedar"
numbers = ["+15550001000", "support"]
local_barge_in = false
[agents.support.turn_detection]
silence_duration_ms = 700
"""
    )
    s = Settings.from_env({"AGENTS_FILE": str(agents)}, env_file=None)
    assert s.agent_for("+15550001000").name == "support"
    assert s.agent_for("sip:support@acme.sip.twilio.com;transport=tls").name == "support"
    assert s.agent_for("+15559999999").name == "front"
    support = s.agent("support")
    assert support is not None
    assert support.turn_detection.silence_duration_ms == 700
    assert support.voice == "cedar" and not support.local_barge_in


@pytest.mark.parametrize(
    "body",
    [
        "[agents.a]\nvoice = 'robot'\n",
        "[agents.a]\ncolour = 'red'\n",
        "default = 'b'\n[agents.a]\n",
        "[agents.a]\nnumbers=['+1']\n[agents.b]\nnumbers=['+1']\n",
        "[agents.a]\n[agents.a.turn_detection]\nspeed = 3\n",
        "[agents.a]\nnumbers = '+15550001000'\n",
        "[agents.a]\nlocal_barge_in = 'no'\n",
        "[agents.a]\nbarge_in_min_ms = -5\n",
        "[agents.a]\ngreeting_guard_ms = '1500'\n",
        "[agents.a]\n[agents.a.turn_detection]\nthreshold = 'high'\n",
        "[agents.a]\n[agents.a.turn_detection]\nthreshold = 2\n",
        "[agents.a]\ngreeting = 42\n",
        "[agents.a]\nmodel_audio = 'g722'\n",
        "not toml at all [",
    ],
)
def test_bad_agents_file_fails_with_the_file_named(tmp_path: Path, body: str):
    agents = tmp_path / "agents.toml"
    agents.write_text(body)
    with pytest.raises(ConfigError, match="AGENTS_FILE"):
        Settings.from_env({"AGENTS_FILE": str(agents)}, env_file=None)


@pytest.mark.parametrize(
    ("env", "greeting"),
    [
        ({}, DEFAULT_GREETING),
        ({"AGENT_GREETING": "Good morning."}, "Good morning."),
        ({"AGENT_GREETING": ""}, ""),
        ({"AGENT_GREETING": "   "}, ""),
    ],
)
def test_agent_greeting_set_but_empty_means_no_greeting(env: dict[str, str], greeting: str):
    assert Settings.from_env(env, env_file=None).agents[0].greeting == greeting


def test_empty_agent_greeting_from_env_file_reaches_agents_file_agents(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("AGENT_GREETING=\n")
    agents = tmp_path / "agents.toml"
    agents.write_text("[agents.quiet]\n[agents.chatty]\ngreeting = 'Hi.'\n")
    s = Settings.from_env({"AGENTS_FILE": str(agents)}, env_file=env_file)
    assert [(a.name, a.greeting) for a in s.agents] == [("quiet", ""), ("chatty", "Hi.")]


def test_a_call_with_an_empty_greeting_asks_the_model_for_nothing():
    async def main() -> None:
        settings = Settings.from_env({"AGENT_GREETING": ""}, env_file=None)
        async with rig(settings) as r:
            result = await simulate_call(
                r.bridge.base_url,
                silence(1.0),
                public_url=r.bridge.public_url,
                auth_token=r.bridge.auth_token,
                tail_s=0.5,
            )
            (session,) = r.agent.sessions
        assert "session.update" in session.received
        assert "response.create" not in session.received
        assert session.responses == {} and session.errors == []
        assert not any(e.kind == "agent_audio_start" for e in result.timeline)

    run_undisturbed(main())


def test_model_audio_and_uplink_batch(tmp_path: Path):
    s = Settings.from_env({"MODEL_AUDIO_FORMAT": "pcmu", "UPLINK_BATCH_MS": "100"}, env_file=None)
    assert s.uplink_batch_ms == 100 and s.agents[0].model_audio == "pcmu"
    agents = tmp_path / "agents.toml"
    agents.write_text("[agents.a]\n[agents.b]\nmodel_audio = 'pcm16'\n")
    s = Settings.from_env({"MODEL_AUDIO_FORMAT": "pcmu", "AGENTS_FILE": str(agents)}, env_file=None)
    assert [a.model_audio for a in s.agents] == ["pcmu", "pcm16"]  # inherited, or its own
    s = Settings.from_env({"MODEL_AUDIO_FORMAT": "pcmu-in"}, env_file=None)
    assert s.agents[0].model_audio == "pcmu-in"
    assert Settings.from_env({}, env_file=None).agents[0].model_audio == "pcm16"
    with pytest.raises(ConfigError, match="MODEL_AUDIO_FORMAT"):
        Settings.from_env({"MODEL_AUDIO_FORMAT": "ulaw"}, env_file=None)
    assert Settings.from_env({}, env_file=None).uplink_batch_ms == 60
