"""The rules of the actions on a stored alert (bridge.store.actions), which both stores
apply: what each changes, and when it may not. The stores' contract suite
(tests/test_store_contract.py) checks that each applies them alike."""

from __future__ import annotations

import pytest

from bridge.core.errors import Conflict
from bridge.store import actions
from tests.stores import stored


def test_an_acknowledgement_asks_for_a_silence_where_alertmanager_makes_them() -> None:
    change = actions.acknowledge(stored(), "rita", "on it", 9, silences_managed=True)
    assert change.columns == {"acked_at": 9, "acked_by": "rita", "ack_comment": "on it",
                              "updated_at": 9, "silence_state": "pending"}  # fmt: skip
    assert change.event == ("acknowledged", "rita", "on it")
    unmanaged = actions.acknowledge(stored(), "rita", "", 9, silences_managed=False)
    assert unmanaged.columns["silence_state"] == "none"
    local = actions.acknowledge(stored(source="local"), "rita", "", 9, silences_managed=True)
    assert local.columns["silence_state"] is None  # the evaluator's alerts need no silence


def test_what_may_not_be_done_is_a_conflict_naming_why() -> None:
    with pytest.raises(Conflict, match="alert 7 is resolved: only firing alerts"):
        actions.acknowledge(stored(status="resolved"), "rita", "", 9, silences_managed=True)
    with pytest.raises(Conflict, match="already acknowledged by bob"):
        actions.acknowledge(stored(acked_at=2, acked_by="bob"), "rita", "", 9,
                            silences_managed=True)  # fmt: skip
    with pytest.raises(Conflict, match="alert 7 is not acknowledged"):
        actions.unacknowledge(stored(), "rita", "", 9)
    with pytest.raises(Conflict, match="alert 7 is already resolved"):
        actions.resolve(stored(status="resolved"), "rita", "done", 9)


@pytest.mark.parametrize(("before", "after"), [("active", "expiring"), ("pending", None),
                                               ("none", "none"), (None, None)])  # fmt: skip
def test_withdrawing_an_acknowledgement_expires_or_forgets_its_silence(
    before: str | None, after: str | None
) -> None:
    acked = stored(acked_at=2, acked_by="bob", silence_state=before)
    change = actions.unacknowledge(acked, "rita", "wrong alert", 9)
    assert change.columns["silence_state"] == after
    assert change.columns["acked_at"] is None
    assert change.event == ("unacknowledged", "rita", "wrong alert")


def test_assigning_to_whom_it_is_assigned_already_changes_nothing() -> None:
    assert actions.assign(stored(assignee="bob"), "rita", "bob", 9) is None
    change = actions.assign(stored(), "rita", "bob", 9)
    assert change is not None
    assert (change.columns["assignee"], change.person) == ("bob", "bob")
    cleared = actions.assign(stored(assignee="bob"), "rita", None, 9)
    assert cleared is not None
    assert (cleared.columns["assignee"], cleared.event, cleared.person) == (
        None, ("assigned", "rita", ""), None)  # fmt: skip


def test_the_systems_resolutions_are_not_needed_once_resolved() -> None:
    assert actions.resolve_system(stored(status="resolved"), 9, "inferred", "reconciler",
                                  "gone") is None  # fmt: skip
    change = actions.resolve_system(stored(), 9, "restart", "evaluator", "no longer held")
    assert change is not None
    assert change.columns == {"status": "resolved", "ends_at": 9, "resolution": "restart",
                              "updated_at": 9}  # fmt: skip


def test_a_change_names_only_columns_the_stores_may_write() -> None:
    with pytest.raises(ValueError, match="not an action's column"):
        actions.Change(1, {"labels; DROP TABLE alerts": 1}, ("x", "y", "z"))
