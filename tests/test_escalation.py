"""The escalation engine on a real store with a virtual clock: levels in time, each posted
once; acknowledgement, its timeout, resolution, windows, urgency, restarts of the bridge,
Alertmanager failing, races with an acknowledgement, replays of the feed, and operators'
overrides. Delivery through the real Alertmanager: tests/test_e2e_escalation.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import AlertmanagerError, Conflict, NotFound
from bridge.core.policies import EscalationSettings, Policy, RateLimit, Route, Step
from bridge.core.times import NS, parse_rfc3339
from bridge.core.windows import Window
from bridge.escalation import transitions
from bridge.escalation.engine import Escalator
from bridge.store import AlertStore, open_store
from tests.stores import T0, received

LEVELS = Policy(
    "standard",
    (Step("notify", ("slack",)), Step("wait", wait=60), Step("notify", ("pager",)),
     Step("wait", wait=120), Step("notify", ("manager",))),
    ack_timeout=600,
)  # fmt: skip


def settings_of(*policies: Policy, urgency: str = "high") -> EscalationSettings:
    routes = tuple(Route(p.name, urgency=urgency) for p in policies[:1])
    return EscalationSettings(policies, routes, repost_interval=60)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NS)


class Recorder:
    """Alertmanager's API as the engine sees it: every posted alert, in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail = False
        self.on_post: Any = None

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> int:
        if self.fail:
            raise AlertmanagerError("POST /api/v2/alerts: connection refused")
        if self.on_post is not None:
            hook, self.on_post = self.on_post, None
            await hook()
        self.posts.extend(dict(a) for a in alerts)
        return 1

    def copies(self) -> list[tuple[str, str, int]]:
        """(level, round, startsAt) of every distinct copy posted, in first-post order."""
        seen: dict[tuple[str, str, int], None] = {}
        for a in self.posts:
            key = (a["labels"]["escalation_level"], a["labels"]["escalation_round"],
                   parse_rfc3339(a["startsAt"]) or 0)  # fmt: skip
            seen.setdefault(key)
        return list(seen)

    def levels(self) -> list[str]:
        return [level for level, _, _ in self.copies()]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AlertStore]:
    opened = open_store(tmp_path / "a.db")
    await opened.start()
    yield opened
    await opened.close()


class Rig:
    def __init__(self, store: AlertStore, settings: EscalationSettings) -> None:
        self.store = store
        self.clock = Clock()
        self.am = Recorder()
        self.settings = settings
        self.engine = Escalator(store, settings, self.am, clock=self.clock)

    async def start(self) -> None:
        await self.engine.consumer.start()

    async def fire(self) -> int:
        result = await self.store.ingest([received(severity="critical")], self.clock.now)
        await self.settle()
        return result.fired[0]

    async def settle(self) -> None:
        await self.engine.consumer.catch_up()
        await self.engine.tick()

    async def at(self, seconds: float) -> None:
        """Move the clock to T0 + seconds, then let the engine work."""
        self.clock.now = T0 + int(seconds * NS)
        await self.settle()

    async def trail(self, alert_id: int) -> list[tuple[str, str]]:
        return [(e.kind, e.detail) for e in await self.store.events(alert_id)
                if e.kind.startswith("escalat")]  # fmt: skip

    def ends(self) -> list[str]:
        """Levels of the copies posted as ended (endsAt at the post time)."""
        out = []
        for a in self.am.posts:
            if parse_rfc3339(a["endsAt"]) == parse_rfc3339(a["_at"]):
                out.append(a["labels"]["escalation_level"])
        return out


@pytest.fixture
async def rig(store: AlertStore) -> Rig:
    made = Rig(store, settings_of(LEVELS))
    original = made.am.post_alerts

    async def stamped(alerts: Sequence[Mapping[str, Any]]) -> int:
        from bridge.core.times import format_micros

        return await original([{**a, "_at": format_micros(made.clock.now)} for a in alerts])

    made.am.post_alerts = stamped  # type: ignore[method-assign]
    await made.start()
    return made


async def test_nobody_acknowledges_level_0_at_once_then_1_then_2_each_once(rig: Rig) -> None:
    alert_id = await rig.fire()
    assert rig.am.levels() == ["0"]
    first = rig.am.posts[0]
    assert first["labels"]["escalation_policy"] == "standard"
    assert first["labels"]["alertname"] == "high_cpu"
    assert first["annotations"]["alertbridge_id"] == str(alert_id)
    await rig.at(59)
    assert rig.am.levels() == ["0"]
    await rig.at(60)
    assert rig.am.levels() == ["0", "1"]
    await rig.at(179)
    assert rig.am.levels() == ["0", "1"]
    await rig.at(180)
    assert rig.am.levels() == ["0", "1", "2"]
    for t in range(181, 1000, 37):
        await rig.at(t)
    assert rig.am.levels() == ["0", "1", "2"]  # each step once; reposts are the same copies
    starts = [start for _, _, start in rig.am.copies()]
    assert starts == [T0, T0 + 60 * NS, T0 + 180 * NS]  # at its due time, not when noticed
    assert len(rig.am.posts) > 3  # still posted again while active
    trail = await rig.trail(alert_id)
    assert trail[0] == ("escalation_started", "policy standard (route 1), urgency high")
    assert [d for k, d in trail if k == "escalated"] == [
        "level 0: slack", "level 1: pager", "level 2: manager"
    ]  # fmt: skip
    assert trail[-1][0] == "escalation_exhausted"
    [esc] = await rig.store.escalations(alert_id)
    assert (esc.state, esc.level, esc.due_at) == ("exhausted", 2, None)
    assert rig.engine.steps_taken == {("standard", "0"): 1, ("standard", "1"): 1,
                                      ("standard", "2"): 1}  # fmt: skip


async def test_acknowledged_during_level_1_level_2_never_comes_and_copies_end(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.at(90)
    await rig.store.acknowledge(alert_id, "alice", "on it", rig.clock.now)
    await rig.at(91)
    assert sorted(rig.ends()) == ["0", "1"]
    for t in range(92, 599, 50):
        await rig.at(t)
    assert rig.am.levels() == ["0", "1"]
    [esc] = await rig.store.escalations(alert_id)
    assert (esc.state, esc.copies) == ("acknowledged", ())
    assert ("escalation_stopped", "acknowledged") in [
        (k, d.split(";")[0]) for k, d in await rig.trail(alert_id)
    ]


async def test_the_ack_timeout_withdraws_the_ack_and_escalation_starts_again(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.at(30)
    await rig.store.acknowledge(alert_id, "alice", "", rig.clock.now)
    await rig.at(31)
    await rig.at(30 + 599)
    assert (await rig.store.get_alert(alert_id)).acknowledged
    await rig.at(30 + 600)  # the timeout: withdrawn, then (through the feed) restarted
    await rig.settle()
    alert = await rig.store.get_alert(alert_id)
    assert not alert.acknowledged
    unack = [e for e in await rig.store.events(alert_id) if e.kind == "unacknowledged"]
    assert [(e.actor, e.detail) for e in unack] == [
        ("escalation", "acknowledgement timed out after 10m")
    ]
    assert rig.am.copies()[-1][:2] == ("0", "2")  # level 0 again, a new round
    await rig.at(30 + 660)
    assert rig.am.copies()[-1][:2] == ("1", "2")


async def test_resolution_stops_escalation_and_ends_its_copies(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.at(61)
    await rig.store.ingest([received(status="resolved", ends=rig.clock.now, severity="critical")],
                           rig.clock.now)  # fmt: skip
    await rig.settle()
    assert sorted(rig.ends()) == ["0", "1"]
    await rig.at(500)
    assert rig.am.levels() == ["0", "1"]
    [esc] = await rig.store.escalations(alert_id)
    assert (esc.state, esc.copies) == ("stopped", ())


async def test_a_restarted_engine_resumes_on_time_and_sends_nothing_twice(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.at(70)
    assert rig.am.levels() == ["0", "1"]
    posts_before = len(rig.am.posts)
    # A new process: a new engine on the same store, from the saved feed position.
    again = Escalator(rig.store, rig.settings, rig.am, clock=rig.clock)
    rig.engine = again
    await again.consumer.start()
    await rig.at(120)
    new = rig.am.posts[posts_before:]
    assert {a["labels"]["escalation_level"] for a in new} <= {"0", "1"}
    assert rig.am.levels() == ["0", "1"]
    await rig.at(180)
    assert rig.am.levels() == ["0", "1", "2"]
    assert rig.am.copies()[2][2] == T0 + 180 * NS
    assert [d for k, d in await rig.trail(alert_id) if k == "escalated"] == [
        "level 0: slack", "level 1: pager", "level 2: manager"
    ]  # fmt: skip


async def test_a_step_taken_but_not_saved_is_the_same_copy_again(rig: Rig) -> None:
    """Killed between the post and the save: after the restart the step is taken again,
    with the same labels and startsAt (Alertmanager de-duplicates it)."""
    await rig.fire()
    [esc] = await rig.store.due_escalations(T0 + 60 * NS)
    move = transitions.advance(esc, T0 + 60 * NS)
    await rig.am.post_alerts([{"labels": {"escalation_level": "1", "escalation_round": "1"},
                               "startsAt": "2026-11-23T10:01:00Z", "endsAt": "x",
                               "_at": "x"}])  # fmt: skip
    assert move.new_copies[0].starts_at == T0 + 60 * NS
    await rig.at(60)  # the step is taken (for real this time): the same copy identity
    assert rig.am.levels() == ["0", "1"]


async def test_alertmanager_down_the_step_waits_and_is_taken_when_it_is_back(rig: Rig) -> None:
    alert_id = await rig.fire()
    rig.am.fail = True
    await rig.at(60)
    await rig.at(65)
    assert rig.engine.post_failures >= 2
    [esc] = await rig.store.escalations(alert_id)
    assert esc.level == 0  # not taken while nobody took the copy
    rig.am.fail = False
    await rig.at(70)
    assert rig.am.levels() == ["0", "1"]
    assert rig.am.copies()[1][2] == T0 + 60 * NS


async def test_an_ack_racing_a_step_wins_and_the_step_copy_is_ended(rig: Rig) -> None:
    alert_id = await rig.fire()

    async def ack_meanwhile() -> None:
        await rig.store.acknowledge(alert_id, "bob", "", rig.clock.now)
        await rig.engine.consumer.catch_up()

    rig.am.on_post = ack_meanwhile
    rig.clock.now = T0 + 60 * NS
    await rig.engine.tick()
    [esc] = await rig.store.escalations(alert_id)
    assert esc.state == "acknowledged"
    assert esc.level == 0  # the step lost the race: not recorded
    assert "1" in rig.ends()  # and its copy, posted, was ended at once
    await rig.at(61)
    assert sorted(set(rig.ends())) == ["0", "1"]


async def test_a_step_outside_its_window_is_skipped(store: AlertStore) -> None:
    never = Window("UTC", frozenset({6}), 0, 60)  # Sundays 00:00-01:00; T0 is a Monday
    policy = Policy("windowed", (Step("notify", ("slack",)), Step("wait", wait=60),
                                 Step("notify", ("pager",), when=never), Step("wait", wait=60),
                                 Step("notify", ("manager",))))  # fmt: skip
    rig = Rig(store, settings_of(policy))
    await rig.start()
    alert_id = await rig.fire()
    await rig.at(60)
    await rig.at(120)
    assert rig.am.levels() == ["0", "2"]
    skipped = [d for k, d in await rig.trail(alert_id) if k == "escalation_skipped"]
    assert skipped == ["level 1: pager: outside sun 00:00-01:00 UTC"]


async def test_a_low_urgency_alert_never_goes_past_its_first_step(store: AlertStore) -> None:
    rig = Rig(store, settings_of(LEVELS, urgency="low"))
    await rig.start()
    alert_id = await rig.fire()
    for t in (60, 180, 400):
        await rig.at(t)
    assert rig.am.levels() == ["0"]
    assert (await rig.trail(alert_id))[-1] == (
        "escalation_exhausted", "policy standard: low urgency: no level past 0"
    )  # fmt: skip


async def test_repeat_goes_back_to_the_first_step_a_bounded_number_of_times(
    store: AlertStore,
) -> None:
    policy = Policy("loop", (Step("notify", ("slack",)), Step("wait", wait=60)), repeat=2)
    rig = Rig(store, settings_of(policy))
    await rig.start()
    await rig.fire()
    for t in range(0, 600, 30):
        await rig.at(t)
    assert [(lv, rnd) for lv, rnd, _ in rig.am.copies()] == [("0", "1"), ("0", "2"), ("0", "3")]


async def test_feed_replays_change_nothing(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.store.acknowledge(alert_id, "a", "", rig.clock.now)
    await rig.store.unacknowledge(alert_id, "a", "", rig.clock.now)
    events = await rig.store.events_after(0, 100)
    await rig.engine.handle(events)
    await rig.engine.handle(events)  # delivered again (at least once)
    await rig.engine.handle(events)
    [esc] = await rig.store.escalations(alert_id)
    assert esc.round == 2  # one restart, however often the events came
    restarts = [k for k, _ in await rig.trail(alert_id) if k == "escalation_restarted"]
    assert restarts == ["escalation_restarted"]


async def test_an_unacknowledgement_by_a_person_starts_escalation_again(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.store.acknowledge(alert_id, "alice", "", rig.clock.now)
    await rig.at(10)
    await rig.store.unacknowledge(alert_id, "bob", "not fixed", rig.clock.now)
    await rig.settle()
    assert rig.am.copies()[-1][:2] == ("0", "2")
    assert ("escalation_restarted",
            "policy standard: acknowledgement withdrawn by bob: from the first step") in (
        await rig.trail(alert_id))  # fmt: skip


async def test_an_alert_no_route_selects_does_not_escalate(store: AlertStore) -> None:
    settings = EscalationSettings((LEVELS,), (Route("standard", severities=frozenset({"info"})),))
    rig = Rig(store, settings)
    await rig.start()
    alert_id = await rig.fire()
    await rig.at(300)
    assert rig.am.posts == []
    assert await store.escalations(alert_id) == []


def up(level: int | None) -> Any:
    return lambda esc, now: transitions.escalated_now(esc, now, level)


def hold(seconds: int | None) -> Any:
    return lambda esc, now: transitions.paused(esc, now, now + seconds * NS if seconds else None)


async def test_escalate_now_takes_the_next_level_and_goes_on_from_there(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.at(10)
    await rig.engine.override(alert_id, "carol", up(None))
    assert rig.am.levels() == ["0", "1"]
    assert rig.am.copies()[1][2] == T0 + 10 * NS
    await rig.at(10 + 119)
    assert rig.am.levels() == ["0", "1"]
    await rig.at(10 + 120)  # level 2 after level 1's wait, counted from the override
    assert rig.am.levels() == ["0", "1", "2"]
    trail = await rig.trail(alert_id)
    assert ("escalation_override", "level 1 now") in trail
    with pytest.raises(Conflict, match="at the last level"):
        await rig.engine.override(alert_id, "carol", up(None))
    with pytest.raises(Conflict, match="levels 0 to 2, not 7"):
        await rig.engine.override(alert_id, "carol", up(7))


async def test_pause_holds_the_steps_until_it_runs_out_or_is_resumed(rig: Rig) -> None:
    alert_id = await rig.fire()
    await rig.engine.override(alert_id, "dave", hold(300))
    for t in (60, 180, 299):
        await rig.at(t)
    assert rig.am.levels() == ["0"]
    await rig.at(300)  # the pause ran out: the next step at once
    assert rig.am.levels() == ["0", "1"]
    await rig.engine.override(alert_id, "dave", hold(None))
    await rig.at(3000)
    assert rig.am.levels() == ["0", "1"]
    await rig.engine.override(alert_id, "erin", transitions.resumed)
    assert rig.am.levels() == ["0", "1", "2"]
    kinds = [k for k, _ in await rig.trail(alert_id)]
    assert kinds.count("escalation_paused") == 2
    assert kinds.count("escalation_resumed") == 2
    with pytest.raises(Conflict, match="is not paused"):
        await rig.engine.override(alert_id, "erin", transitions.resumed)
    with pytest.raises(NotFound):
        await rig.engine.override(alert_id + 100, "erin", transitions.resumed)


async def test_a_rate_limit_holds_back_copies_from_its_receiver_and_sends_a_summary(
    store: AlertStore,
) -> None:
    policy = Policy("burst", (Step("notify", ("pager", "chat")),))
    settings = EscalationSettings((policy,), (Route("burst"),), repost_interval=60,
                                  rate_limits=(RateLimit("pager", 2, 60),))  # fmt: skip
    rig = Rig(store, settings)
    await rig.start()
    ids = []
    for n in range(5):
        result = await store.ingest([received(fingerprint=f"{n:016x}", severity="critical")],
                                    rig.clock.now)  # fmt: skip
        ids.append(result.fired[0])
    await rig.settle()
    copies = [a for a in rig.am.posts if "escalation_level" in a["labels"]]
    held = [a["labels"].get("escalation_held") for a in copies]
    assert held.count(None) == 2  # the first two within the budget
    assert held.count("pager") == 3  # still posted: chat takes them; pager is held back
    [summary] = [
        a for a in rig.am.posts if a["labels"]["alertname"] == "AlertbridgeEscalationsHeld"
    ]
    assert summary["labels"]["escalation_receiver"] == "pager"
    assert summary["annotations"]["summary"] == (
        "3 escalation notifications to pager held back (at most 2 per 1m)"
    )
    assert rig.engine.limiter.held_total == {"pager": 3}
    trail = [d for k, d in await rig.trail(ids[4]) if k == "escalated"]
    assert trail == ["level 0: pager, chat (rate limit: pager held back)"]
    rig.am.posts.clear()
    rig.clock.advance(61)  # the window moved on: pager is notified again
    await store.ingest([received(fingerprint=f"{99:016x}", severity="critical")], rig.clock.now)
    await rig.settle()
    [fresh] = [a for a in rig.am.posts if a["labels"].get("escalation_level") == "0"
               and a["labels"]["instance"] == "a:1" and "escalation_held" not in a["labels"]
               and a["annotations"]["alertbridge_id"] not in {str(i) for i in ids}]  # fmt: skip
    assert fresh


def test_rate_limit_config_errors(tmp_path: Path) -> None:
    import yaml

    from bridge.config import load_settings
    from bridge.core.errors import ConfigError

    receivers = [{"name": "pager", "type": "pagerduty", "config": {"routing_key_file": "/k"}}]
    policies = [{"name": "p", "steps": [{"notify": ["pager"]}]}]
    for limits, message in (
        ([{"receiver": "nobody", "max": 1, "per": "1m"}], "is notified by no escalation policy"),
        ([{"receiver": "pager", "max": 0, "per": "1m"}], "max: must be a count of at least 1"),
        ([{"receiver": "pager", "max": 1, "per": "soon"}], "per: expected a duration"),
        ([{"receiver": "pager", "max": 1}], "must be {receiver: NAME, max: COUNT, per:"),
        ([{"receiver": "pager", "max": 1, "per": "1m"}] * 2, "'pager' is limited twice"),
    ):
        doc = {"alertmanager": {"receivers": receivers},
               "escalation": {"policies": policies, "rate_limits": limits}}  # fmt: skip
        path = tmp_path / "c.yml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(path, {})


async def test_copies_stay_active_long_enough_to_outlast_a_restart(rig: Rig) -> None:
    """A copy's endsAt is four repost intervals ahead, but at least five minutes: an engine
    restarting (seen: a worker killed and started again under a loaded CI) must not let
    Alertmanager resolve copies that its next repost would fire again (a second page)."""
    await rig.fire()
    [copy] = rig.am.posts
    ends = parse_rfc3339(copy["endsAt"])
    assert ends is not None
    assert (ends - rig.clock.now) / NS == 300  # repost_interval 60: 4 x 60 = 240 < 300
    longer = EscalationSettings(rig.settings.policies, rig.settings.routes, repost_interval=120)
    assert longer.hold_seconds == 480


async def test_a_rule_given_a_policy_over_the_api_escalates_by_it(store: AlertStore) -> None:
    """No route selects the alert; its rule is given the policy in a version of the rule
    set recorded after the engine started (over the API, by another process): the next
    episode of that rule escalates by it, with the rule named as the reason."""
    from bridge.core.rulebook import RuleVersion, entries_of, update
    from bridge.core.rules import RuleSet

    settings = EscalationSettings((LEVELS,), (Route("standard", severities=frozenset({"info"})),))
    rig = Rig(store, settings)
    await rig.start()
    first = await rig.fire()
    assert await store.escalations(first) == []
    rules = update(RuleSet.default(), "high_cpu", {"escalation": LEVELS.name}, merge=True)
    await store.add_rule_version(RuleVersion(1, T0, "ann", "updated", "high_cpu",
                                             tuple(entries_of(rules)), ""))  # fmt: skip
    second = await store.ingest([received(fingerprint="00000000000000f2", severity="critical")],
                                rig.clock.now)  # fmt: skip
    await rig.settle()
    (escalation,) = await store.escalations(second.fired[0])
    assert escalation.policy.name == LEVELS.name
    assert rig.engine.rules_version == 1
