"""The responses one call sees: in flight, stale, owed (``bridge.responses``)."""

from __future__ import annotations

from bridge.ai.events import ACTIVE_RESPONSE as ACTIVE
from bridge.responses import Responses


def test_a_response_from_asked_to_done():
    r = Responses()
    assert not r.active and not r.finishing and r.cancellable is None
    r.asked("event_1", answer=False)
    assert r.finishing and not r.active  # asked, not created: another would collide
    r.created("resp_1")
    assert r.active and not r.finishing and r.cancellable == "resp_1"
    assert r.item_added("resp_1", "item_a")
    r.all_audio("resp_other")  # another response's audio says nothing of this one
    assert r.cancellable == "resp_1"
    r.all_audio("resp_1")
    assert r.finishing and r.cancellable is None  # finishing: never cancelled
    assert r.done("resp_1") is None  # nothing owed
    assert not r.active and not r.finishing


def test_an_owed_response_is_asked_for_when_the_current_one_is_done():
    r = Responses()
    r.created("resp_1")
    r.owe("carry_on")
    r.owe("answer")
    r.owe("carry_on")  # typed input to answer outranks carrying on
    assert r.done("resp_other") is None and r.active  # not the one in flight
    assert r.done("resp_1") == "answer"
    assert r.owed is None and r.done("resp_1") is None  # owed once


def test_a_request_that_crossed_the_servers_own_response_is_a_race_not_a_mistake():
    # On the wire: our response.create crossed the response.created of a response the
    # server started itself (its VAD heard the caller), then the error for ours.
    r = Responses()
    r.asked("event_carry_on", answer=False)
    r.created("resp_server")
    assert r.refused(ACTIVE, "event_carry_on") is True
    assert r.owed is None  # the model is speaking to the caller: that is carrying on
    assert r.done("resp_server") is None
    r.asked("event_typed", answer=True)
    r.created("resp_server_2")
    assert r.refused(ACTIVE, "event_typed") is True
    assert not r.finishing and r.active
    assert r.done("resp_server_2") == "answer"  # typed input is answered after it


def test_other_errors_and_requests_not_ours_are_not_races():
    r = Responses()
    r.asked("event_1", answer=True)
    assert r.refused("invalid_value", "event_1") is False
    assert r.refused(ACTIVE, "event_someone_elses") is False
    assert r.refused(ACTIVE, None) is False
    assert r.owed is None and not r.finishing
    r.created("resp_1")
    r.asked("event_2", answer=True)  # while we knew one was in flight: a mistake
    assert r.refused(ACTIVE, "event_2") is False
    r.done("resp_1")
    r.asked("event_3", answer=False)
    r.asked("event_4", answer=False)  # while our own was on its way: a mistake too
    assert r.refused(ACTIVE, "event_4") is False


def test_a_cut_response_is_stale_with_the_items_it_made_and_will_make():
    r = Responses()
    assert r.cut() == []
    r.created("resp_1")
    r.item_added("resp_1", "item_a")
    r.item_added("resp_1", "item_b")
    assert r.cut() == ["item_a", "item_b"]
    assert r.stale("resp_1") and not r.stale("resp_2")
    assert r.item_added("resp_1", "item_c") is False  # made after the cut: dropped too
    r.created("resp_2")
    assert r.item_added("resp_2", "item_d")


def test_a_lost_session_leaves_nothing_in_flight_or_owed():
    r = Responses()
    r.asked("event_1", answer=False)
    r.created("resp_1")
    r.owe("answer")
    r.asked("event_2", answer=False)
    r.lost()
    assert not r.active and r.owed is None and not r.finishing and r.stale("resp_1")
    r.asked("event_3", answer=False)
    r.refused("server_error", None)  # an error: what we asked for may never come
    assert not r.finishing
