"""What both store implementations share below SQL: how a stored row becomes a record (the
alerts columns in StoredAlert's order, JSON text decoded; an escalation's row, its plan and
copies), and the validation of the texts an action takes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import orjson

from bridge.core.errors import Conflict, Unprocessable
from bridge.core.policies import Policy
from bridge.core.rulebook import RuleVersion
from bridge.store.records import MAX_TEXT, Copy, Escalation, StoredAlert
from bridge.store.sql import RULE_VERSION_COLUMNS

#: The alerts columns a StoredAlert is built from, in its fields' order (one source: the
#: dataclass), and where the ones needing decoding and the text a page counts sit.
_NAMES = tuple(f.name for f in fields(StoredAlert))
COLUMNS = ", ".join(_NAMES)
COLUMN_COUNT = len(_NAMES)
LABELS, ANNOTATIONS, URL, COMMENT, _SILENCED_BY, _INHIBITED_BY, _ENRICHMENT, _CLIPPED, _EXTRA = map(
    _NAMES.index,
    ("labels", "annotations", "generator_url", "ack_comment", "am_silenced_by", "am_inhibited_by",
     "enrichment", "clipped", "extra"),
)  # fmt: skip


def row_to_alert(row: Sequence[Any]) -> StoredAlert:
    values = list(row)
    values[LABELS] = orjson.loads(values[LABELS])
    values[ANNOTATIONS] = orjson.loads(values[ANNOTATIONS])
    values[_SILENCED_BY] = tuple(orjson.loads(values[_SILENCED_BY]))
    inhibitors = orjson.loads(values[_INHIBITED_BY])
    values[_INHIBITED_BY] = tuple((i["fingerprint"], i["alert_id"]) for i in inhibitors)
    values[_ENRICHMENT] = orjson.loads(values[_ENRICHMENT])
    values[_CLIPPED] = tuple(orjson.loads(values[_CLIPPED]))
    values[_EXTRA] = orjson.loads(values[_EXTRA])
    return StoredAlert(*values)


def text_field(value: object, name: str, *, required: bool) -> str:
    """An action's text (who, a comment, a note): a string of at most MAX_TEXT characters,
    not blank when required; Unprocessable names the field otherwise."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Unprocessable(name, "must be a non-empty string" if required else "must be a string")
    if len(value) > MAX_TEXT:
        raise Unprocessable(name, f"at most {MAX_TEXT} characters")
    return value


ESCALATION_ACTOR = "escalation"
ESCALATION_COLUMNS = (
    "alert_id, policy, plan, urgency, state, position, repeats, round, due_at, level, copies,"
    " reposted_at, version, updated_at, paused_state, event_id, forced"
)


def escalation_row(row: Sequence[Any]) -> Escalation:
    (alert_id, _name, plan, urgency, state, position, repeats, rnd, due_at, level, copies,
     reposted_at, version, updated_at, paused_state, event_id, forced) = row  # fmt: skip
    return Escalation(
        alert_id=alert_id,
        policy=_policy(plan),
        urgency=urgency,
        state=state,
        position=position,
        repeats=repeats,
        round=rnd,
        due_at=due_at,
        level=level,
        copies=tuple(Copy.from_json(c) for c in orjson.loads(copies)),
        reposted_at=reposted_at,
        version=version,
        updated_at=updated_at,
        paused_state=paused_state,
        event_id=event_id,
        forced=forced,
    )


@functools.lru_cache(maxsize=256)
def _policy(plan: str) -> Policy:
    """A stored plan decoded (a handful of distinct plans, read for every due step)."""
    return Policy.from_json(orjson.loads(plan))


@functools.lru_cache(maxsize=64)
def escalation_plan(policy: Policy) -> str:
    """A policy as stored on its escalations (policies are frozen: one encoding each)."""
    return orjson.dumps(policy.to_json()).decode()


def escalation_copies(esc: Escalation) -> str:
    return orjson.dumps([c.to_json() for c in esc.copies]).decode()


#: What makes a copied row the same row as the target's of that key (an alert id must be
#: the same episode in both, or the events copied after it would land on another alert).
SAME_ROW = {"alerts": ("id", "fingerprint", "starts_at")}

#: The tables `alertbridge migrate` copies between stores (dump, load), their columns and the
#: key that orders and pages them (alert_counts, leases and the like are not copied: each
#: store derives or takes them itself).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alerts": (_NAMES, ("id",)),
    "events": (("id", "alert_id", "at", "kind", "actor", "detail"), ("id",)),
    "meta": (("key", "value"), ("key",)),
    "people": (("name",), ("name",)),
    "escalations": (tuple(c.strip() for c in ESCALATION_COLUMNS.split(",")),
                    ("alert_id", "policy")),
    "rule_versions": (tuple(c.strip() for c in RULE_VERSION_COLUMNS.split(",")), ("version",)),
}  # fmt: skip


def rule_version(row: Sequence[Any]) -> RuleVersion:
    """A RuleVersion from its row (RULE_VERSION_COLUMNS)."""
    version, at, actor, action, rule, entries, diff = row
    return RuleVersion(int(version), int(at), actor, action, rule,
                       tuple(orjson.loads(entries)), diff)  # fmt: skip


def rule_version_row(version: RuleVersion) -> tuple[Any, ...]:
    """The row of a RuleVersion (RULE_VERSION_COLUMNS)."""
    entries = orjson.dumps([dict(e) for e in version.entries]).decode()
    return (version.version, version.at, version.actor, version.action, version.rule, entries,
            version.diff)  # fmt: skip


def stale_rules(latest: int, version: RuleVersion) -> Conflict:
    """Two changes of the rule set based on one version: the second is refused."""
    made_on = version.version - 1
    return Conflict(f"the rule set changed meanwhile: version {latest} is the latest, this"
                    f" change was made on version {made_on}; read it again")  # fmt: skip
