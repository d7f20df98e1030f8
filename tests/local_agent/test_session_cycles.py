"""A local-agent session is freed by reference counting alone once dropped.

A session in a reference cycle (for instance its conversation holding the session's bound
methods) keeps its input audio and spoken replies until a full garbage collection: in a
soak with sessions cut every few seconds that was tens of MB of dead audio at any time,
and the resident memory crept with each collection's peak.
"""

import gc
import weakref

from bridge.ai import events as rt
from tests.ai.helpers import Driver
from tests.local_agent.test_session import AGENT, utterance


def test_a_session_after_a_spoken_turn_is_freed_without_the_cycle_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        d = Driver()
        d.send(rt.session_update(AGENT))
        d.stream(utterance())
        d.wait(10.0)
        assert d.of_type("response.done"), "the turn must reach a full reply"
        assert d.session.closed is None
        gone = weakref.ref(d.session)
        del d
        assert gone() is None, "the session is held in a reference cycle"
    finally:
        gc.enable()
