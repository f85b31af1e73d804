"""Changes to the rule set one rule at a time (bridge.core.rulebook): each validated as the
configuration's `rules:` are, the document of a rule set canonical whatever form the change
came in, and the difference each made."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core import rulebook
from bridge.core.errors import Conflict, NotFound, RuleError
from bridge.core.rules import DEFAULT_RULES, RuleSet, load_rules

DISK = {"name": "disk_full", "metric": "disk", "expr": "disk_used_ratio > 0.9",
        "condition": ">", "threshold": 0.9, "severity": "critical", "for": "1m"}  # fmt: skip


def test_a_new_rule_is_added_and_its_entry_holds_only_what_differs() -> None:
    rules = rulebook.create(RuleSet.default(), DISK)
    assert rules.get("disk_full").for_seconds == 60  # type: ignore[union-attr]
    assert rulebook.entries_of(rules) == [
        {"name": "disk_full", "metric": "disk", "condition": ">", "threshold": 0.9,
         "severity": "critical", "for": 60, "expr": "disk_used_ratio > 0.9"},
    ]  # fmt: skip


def test_a_name_taken_or_missing_is_refused() -> None:
    rules = rulebook.create(RuleSet.default(), DISK)
    with pytest.raises(Conflict, match="a rule named 'disk_full' exists"):
        rulebook.create(rules, DISK)
    with pytest.raises(Conflict, match="'high_cpu' exists"):
        rulebook.create(rules, {**DISK, "name": "high_cpu"})
    with pytest.raises(RuleError, match="a new rule needs a name"):
        rulebook.create(rules, {k: v for k, v in DISK.items() if k != "name"})
    with pytest.raises(RuleError, match="severity: required for a new rule"):
        rulebook.create(rules, {k: v for k, v in DISK.items() if k != "severity"} | {"name": "x"})
    with pytest.raises(RuleError) as bad:
        rulebook.create(rules, {**DISK, "name": "other", "threshold": "high"})
    assert bad.value.field == "threshold"
    with pytest.raises(RuleError, match="unknown field"):
        rulebook.create(rules, {**DISK, "name": "other", "thresold": 1})


def test_what_a_get_answered_can_be_put_back_with_one_field_changed() -> None:
    """A rule as the API shows it (derived fields, every default field) is taken as the
    same rule: the document is the same whatever form the change came in."""
    rules = rulebook.create(RuleSet.default(), DISK)
    shown = {**rulebook.rule_record(rules.get("high_cpu")), "state": "inactive", "firing": 0}  # type: ignore[arg-type]
    again = rulebook.update(rules, "high_cpu", {**shown, "threshold": 85})
    assert rulebook.entries_of(again)[0] == {"name": "high_cpu", "threshold": 85}
    shown = rulebook.rule_record(again.get("disk_full"))  # type: ignore[arg-type]
    assert rulebook.update(again, "disk_full", shown) == again


def test_a_default_rule_takes_only_the_fields_it_may_change() -> None:
    rules = RuleSet.default()
    with pytest.raises(RuleError, match="metric: cannot be changed on a default rule"):
        rulebook.update(rules, "high_cpu", {"metric": "errors.rate"}, merge=True)
    with pytest.raises(RuleError, match="is 'other' in the body"):
        rulebook.update(rules, "high_cpu", {"name": "other"}, merge=True)
    replaced = rulebook.update(rules, "high_cpu", {"threshold": 90})  # PUT: the rest defaults
    assert replaced.get("high_cpu") == DEFAULT_RULES[0].replace(threshold=90)


def test_put_replaces_and_patch_merges() -> None:
    rules = rulebook.create(RuleSet.default(), {**DISK, "labels": {"team": "db"}})
    merged = rulebook.update(rules, "disk_full", {"threshold": 0.95}, merge=True)
    assert dict(merged.get("disk_full").labels) == {"team": "db"}  # type: ignore[union-attr]
    put = rulebook.update(rules, "disk_full", {**DISK, "threshold": 0.95})
    assert dict(put.get("disk_full").labels) == {}  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="no rule named 'nope'"):
        rulebook.update(rules, "nope", {})


def test_delete_and_enable() -> None:
    rules = rulebook.create(RuleSet.default(), DISK)
    assert rulebook.delete(rules, "disk_full") == RuleSet.default()
    with pytest.raises(Conflict, match="high_cpu is a default rule: it cannot be deleted"):
        rulebook.delete(rules, "high_cpu")
    off = rulebook.set_enabled(rules, "high_cpu", False)
    assert rulebook.entries_of(off)[0] == {"name": "high_cpu", "enabled": False}
    assert rulebook.set_enabled(off, "high_cpu", True) == rules


def test_the_difference_names_the_fields_changed() -> None:
    rules = RuleSet.default()
    after = rulebook.update(rules, "high_cpu", {"threshold": 85}, merge=True)
    diff = rulebook.difference(rules, after, ["high_cpu"])
    assert "-  threshold: 80\n+  threshold: 85\n" in diff
    assert "critical_cpu" not in diff
    assert rulebook.difference(rules, rules) == ""


def test_a_version_records_and_reads_back() -> None:
    entries = tuple(rulebook.entries_of(rulebook.create(RuleSet.default(), DISK)))
    version = rulebook.RuleVersion(3, 10, "ann", "created", "disk_full", entries, "d")
    assert version.rules().get("disk_full") is not None
    assert "entries" not in version.record()
    assert version.record(entries=True)["entries"][0]["name"] == "disk_full"


_CHANGES = st.lists(
    st.one_of(
        st.tuples(st.just("threshold"), st.sampled_from([r.name for r in DEFAULT_RULES]),
                  st.integers(1, 99)),
        st.tuples(st.just("enabled"), st.sampled_from([r.name for r in DEFAULT_RULES]),
                  st.booleans()),
        st.tuples(st.just("for"), st.sampled_from(["disk_full"]), st.integers(0, 3600)),
    ),
    max_size=12,
)  # fmt: skip


@given(_CHANGES)
def test_the_document_of_a_rule_set_loads_back_as_that_rule_set(changes: list[Any]) -> None:
    """Whatever changes made it, entries_of(rules) read as a configuration's `rules:` is the
    same rule set (what a version stores is what goes back into force)."""
    rules = rulebook.create(RuleSet.default(), DISK)
    for field, name, value in changes:
        rules = rulebook.update(rules, name, {field: value}, merge=True)
    assert load_rules(rulebook.entries_of(rules), "t") == rules
