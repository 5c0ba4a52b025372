"""Unit tests of the pause's one home (`backend.chat.pause`): asks as parts, answers checked and folded, cancelling."""

from __future__ import annotations

import pytest

from backend.chat.events import ApprovalRequest, ClientToolCall
from backend.chat.pause import (
    MAX_RESULT_BYTES,
    Answers,
    Approved,
    Cancelled,
    ClientResult,
    Pause,
    PausedState,
    Rejected,
    answered,
    answers_to,
    cancelled,
    part_of,
    waiting,
)
from backend.errors import ConflictError, InvalidInputError

APPROVAL = ApprovalRequest("call_a", "delete_task", {"task": "milk"})
CLIENT = ClientToolCall("call_c", "set_theme", {"theme": "dark"})


def parts() -> list[dict[str, object]]:
    return [{"type": "text", "text": "Sure."}, part_of(APPROVAL), part_of(CLIENT)]


def test_asks_round_trip_through_their_stored_parts():
    assert part_of(APPROVAL) == {
        "type": "approval",
        "id": "call_a",
        "name": "delete_task",
        "args": {"task": "milk"},
        "decision": None,
    }
    assert part_of(CLIENT)["result"] is None
    assert waiting(parts()) == [APPROVAL, CLIENT]


def test_answered_asks_no_longer_wait():
    stored = [answered(p, Rejected("call_a", "no")) for p in parts()]
    assert stored[1] == {**part_of(APPROVAL), "decision": "rejected", "reason": "no"}
    assert waiting(stored) == [CLIENT]
    assert answered(part_of(APPROVAL), Approved("other")) == part_of(APPROVAL)  # not its answer
    assert answered(part_of(CLIENT), ClientResult("call_c", {"ok": True})) == part_of(CLIENT)  # the run fills it


def test_a_new_message_cancels_what_waits_and_keeps_what_was_answered():
    decided = [answered(p, Approved("call_a")) for p in parts()]
    after = cancelled(decided)
    assert after[1]["decision"] == "approved"
    assert after[2]["result"] == {"error": "cancelled"}
    every = cancelled(parts())
    assert every[1]["decision"] == "cancelled" and waiting(every) == []
    assert answered(part_of(APPROVAL), Cancelled("call_a"))["decision"] == "cancelled"


def test_answers_must_match_what_waits():
    answers = answers_to(parts(), [Approved("call_a")], [ClientResult("call_c", {"theme": "dark"})])
    assert answers.decisions == {"call_a": Approved("call_a")}
    assert answers.client_results() == {"call_c": '{"theme": "dark"}'}
    assert answers.fold(parts())[1]["decision"] == "approved"
    with pytest.raises(ConflictError) as unknown:
        answers_to(parts(), [Approved("nope")], [])
    assert unknown.value.code == "not_pending"
    with pytest.raises(InvalidInputError, match="missing: call_c"):
        answers_to(parts(), [Rejected("call_a")], [])


def test_a_client_that_resends_settled_results_may_have_them_skipped():
    resent = [Approved("call_a"), Approved("call_old")]
    results = [ClientResult("call_c", {"theme": "dark"}), ClientResult("call_done", [1, 2])]
    with pytest.raises(ConflictError):
        answers_to(parts(), resent, results)
    answers = answers_to(parts(), resent, results, skip_settled=True)
    assert (set(answers.decisions), set(answers.client_results())) == ({"call_a"}, {"call_c"})
    with pytest.raises(InvalidInputError, match="missing: call_a"):
        answers_to(parts(), [Approved("call_old")], results, skip_settled=True)
    too_big = [ClientResult("call_c", "x" * (MAX_RESULT_BYTES + 1))]
    with pytest.raises(InvalidInputError, match="at most"):
        answers_to(parts(), [Approved("call_a")], too_big)


def test_the_finish_reason_and_the_stored_state():
    state = PausedState("Triage", {"$schemaVersion": "1.0"})
    assert Pause([CLIENT], state).finish == "client_tool"
    assert Pause([CLIENT, APPROVAL], state).finish == "approval_required"
    assert PausedState.of(state.to_json()) == state
    assert PausedState.of({"state": "not a dict"}) == PausedState("", {})
    assert Answers().fold(parts()) == parts()
