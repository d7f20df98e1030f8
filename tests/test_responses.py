"""The responses one call sees: in flight, stale, owed (``bridge.responses``)."""

from __future__ import annotations

from bridge.responses import Responses


def test_a_response_from_asked_to_done():
    r = Responses()
    assert not r.active and not r.finishing and r.cancellable is None
    r.asked()
    assert r.finishing and not r.active  # asked, not created: another would collide
    r.created("resp_1")
    assert r.active and not r.finishing and r.cancellable == "resp_1"
    assert r.item_added("resp_1", "item_a")
    r.all_audio("resp_other")  # another response's audio says nothing of this one
    assert r.cancellable == "resp_1"
    r.all_audio("resp_1")
    assert r.finishing and r.cancellable is None  # finishing: never cancelled
    assert r.done("resp_1") is False  # nothing owed
    assert not r.active and not r.finishing


def test_an_owed_response_is_asked_for_when_the_current_one_is_done():
    r = Responses()
    r.created("resp_1")
    r.owed = True
    assert r.done("resp_other") is False and r.active  # not the one in flight
    assert r.done("resp_1") is True
    assert r.owed is False and r.done("resp_1") is False  # owed once


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
    r.asked()
    r.created("resp_1")
    r.owed = True
    r.asked()
    r.lost()
    assert not r.active and not r.owed and not r.finishing and r.stale("resp_1")
    r.asked()
    r.refused()  # an error: what we asked for may never come
    assert not r.finishing
