"""The model circuit breaker: opened by calls that could not reach the model, it sends
new calls their fallback straight from the webhook and turns ``/readyz`` 503 until a
probe reaches the model again."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from bridge.agents import Agent, Fallback
from bridge.breaker import KEPT_FAILURES, ModelBreaker
from bridge.config import Settings
from bridge.local_agent import Faults
from tests.e2e import Rig, rig, run_undisturbed, until
from tests.resilience.helpers import voice
from tests.test_e2e_robustness import closed_within, stream


def test_it_opens_after_n_calls_in_a_row_and_a_call_that_reaches_the_model_resets_it():
    changes: list[bool] = []
    breaker = ModelBreaker(3, 1.0, changes.append)
    for n in range(2):
        breaker.call_ended(f"CA{n}", reached_model=False, unreachable=True)
    breaker.call_ended("CAok", reached_model=True, unreachable=False)  # back to zero
    for n in range(2):
        breaker.call_ended(f"CB{n}", reached_model=False, unreachable=True)
    breaker.call_ended("CAgone", reached_model=False, unreachable=False)  # proves nothing
    assert not breaker.is_open and changes == []
    breaker.call_ended("CB2", reached_model=False, unreachable=True)
    assert breaker.is_open and changes == [True]
    assert breaker.failed("CB2") and breaker.failed("CA0") and not breaker.failed("CAok")
    breaker.call_ended("CAlate", reached_model=True, unreachable=False)
    assert not breaker.is_open and changes == [True, False]


def test_a_threshold_of_zero_never_opens_and_failures_kept_are_bounded():
    breaker = ModelBreaker(0, 1.0)
    for n in range(KEPT_FAILURES + 10):
        breaker.call_ended(f"CA{n}", reached_model=False, unreachable=True)
    assert not breaker.is_open
    assert not breaker.failed("CA0") and breaker.failed(f"CA{KEPT_FAILURES + 9}")


async def readyz(r: Rig) -> tuple[int, dict[str, object]]:
    def get() -> tuple[int, dict[str, object]]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(r.bridge.base_url + "/readyz", timeout=15) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), json.loads(exc.read())

    return await asyncio.to_thread(get)


def test_calls_that_cannot_reach_the_model_open_it_and_a_probe_closes_it():
    async def main() -> None:
        desk = Agent(name="desk", fallback=Fallback("say", "We are closed."))
        settings = Settings(
            agents=(desk,),
            default_agent="desk",
            model_retry_budget_s=0.3,
            model_breaker_threshold=2,
            model_breaker_probe_s=0.2,
        )
        faults = Faults(refuse_status=503, refuse_first=10_000)
        async with rig(settings, agent_options={"faults": faults}) as r:
            services = r.bridge.services
            assert (await readyz(r))[0] == 200
            for n in (1, 2):
                async with stream(r, n) as s:
                    assert await closed_within(s.ws) not in (None, 1000)
            await until(lambda: services.breaker.is_open, "the breaker to open")
            status, body = await readyz(r)
            assert status == 503 and body["reason"] == "model unreachable"
            # New calls get the fallback at once: no stream, no model session.
            refused = len(r.agent.refused)
            twiml = await voice(r, "CA" + "3" * 32)
            assert [(e.tag, e.text) for e in ET.fromstring(twiml)] == [
                ("Say", "We are closed."),
                ("Hangup", None),
            ]
            assert services.metrics.limited["breaker_open"] == 1
            assert services.metrics.breaker_open
            # The probe keeps trying; once the model answers, the breaker closes.
            await until(lambda: len(r.agent.refused) > refused, "a probe")
            faults.refuse_first = 0
            await until(lambda: not services.breaker.is_open, "the breaker to close")
            assert (await readyz(r))[0] == 200
            twiml = await voice(r, "CA" + "4" * 32)
            assert [e.tag for e in ET.fromstring(twiml)] == ["Connect"]
            assert services.breaker.probes >= 2

    run_undisturbed(main())
