"""Rules managed while running: a change over the API is checked as `rules check` checks,
written as `rules generate` writes, put into force (Prometheus and Alertmanager reloaded, the
bridge's own evaluator updated) and recorded as a version in the store, or refused with
nothing changed.

The order is the one that keeps every failure harmless:
1. the change on the rule set in force (bridge.core.rulebook): a RuleError, NotFound or
   Conflict names what is wrong;
2. every file generated into a scratch directory and judged by promtool and amtool (the rule
   files, their unit tests, the configuration, a route test per rule): a failed check is
   ChecksFailed, nothing written;
3. the files written (each atomically, the previous contents kept) and every Prometheus and
   Alertmanager told to reload: a reload that fails puts the previous files back, reloads
   again and is ReloadFailed, nothing recorded;
4. the version recorded in the store (Conflict if another replica recorded one first), and
   only then the rule set in force here.

Replicas change the rules one at a time (the store's lease `rules`), and each follows the
versions the others record (`follow`): the same rule set everywhere, the files of each
replica's `output` written and reloaded when they differ.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bridge.config import Settings
from bridge.core.errors import BridgeError, Conflict, RuleError, ToolError
from bridge.core.policies import is_internal
from bridge.core.rulebook import RuleVersion, difference, entries_of
from bridge.core.rules import RuleSet
from bridge.core.times import format_micros, now_ns, parse_rfc3339
from bridge.generate import RULES_PATH, TESTS_PATH, render_all, write_all, write_atomic
from bridge.generate.check import CheckResult, run_checks
from bridge.generate.prometheus import render_rule_tests, render_rules
from bridge.host.tools import find_tool
from bridge.store.interface import Leases, RuleVersions

log = logging.getLogger(__name__)

LEASE = "rules"
LEASE_SECONDS = 120  # longer than any check and reload; released at once after
RELOAD_TIMEOUT = 30.0  # Prometheus answers /-/reload once the new rules are loaded


class ReadOnly(Conflict):
    """Rules are not managed over the API here."""

    code = "rules_read_only"


class ChecksFailed(BridgeError):
    """promtool or amtool refused the generated files: nothing was written."""

    def __init__(self, failed: Sequence[CheckResult]) -> None:
        self.failed = list(failed)
        first = failed[0]
        lines = first.output.strip().splitlines()
        detail = "; ".join(lines[-3:]) if lines else "no output"
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        super().__init__(f"{first.name} failed{more}: {detail}")


class ReloadFailed(BridgeError):
    """A reload failed: the previous files are back (and were reloaded)."""


class WriteFailed(BridgeError):
    """A generated file could not be written: the files written before it are back."""


class Store(RuleVersions, Leases, Protocol):
    """What the manager needs of a store."""


@dataclass(frozen=True, slots=True)
class Applied:
    """A change put into force: its version (None: nothing changed), the checks run, the
    files written and what was reloaded."""

    version: RuleVersion | None
    checks: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "version": None if self.version is None else self.version.record(),
            "checks": self.checks,
            "written": self.written,
            "reloaded": self.reloaded,
        }


Change = Callable[[RuleSet], RuleSet]


def settings_with(settings: Settings, rules: RuleSet) -> Settings:
    """`settings` with another rule set (and the escalation policies its rules name)."""
    named = {r.name: r.escalation for r in rules if r.escalation}
    return replace(settings, rules=rules,
                   escalation=replace(settings.escalation, rule_policies=named))  # fmt: skip


def _tools_present() -> bool:
    try:
        find_tool("promtool")
        find_tool("amtool")
    except ToolError:
        return False
    return True


def check_rules(settings: Settings, changed: Collection[str] | None = None) -> list[CheckResult]:
    """The checks of `rules check` on the files `settings` generate, the routes tested of
    the rules `changed` only (None: of all); blocking: run in a thread."""
    with tempfile.TemporaryDirectory(prefix="alertbridge-change-") as tmp:
        root = Path(tmp)
        artifacts = render_all(settings)
        write_all(artifacts, root)
        _tests_on_tested_rules(settings, root, artifacts.untested)
        return list(run_checks(settings, root, changed))


#: The scratch copy of the rules the unit tests load (not the rule_files glob of prometheus.yml).
TESTED_RULES = "tested-rules.yaml"


def _tests_on_tested_rules(settings: Settings, root: Path, untested: Sequence[str]) -> None:
    """Point the scratch tree's unit tests at a rules file of the rules they test only.
    promtool evaluates every rule it loads at every step of every test: 1,000 custom rules
    (which have no tests) made a change's check 9.8 s of promtool test for the ten tested,
    0.2 s without them. Rules do not read each other's alerts, so the verdicts are the same;
    `promtool check rules` still checks the whole file."""
    skipped = {u.split(" ", 1)[0] for u in untested}
    tested = [r for r in settings.rules if r.enabled and r.name not in skipped]
    beat = settings.heartbeat.enabled
    folder = root / RULES_PATH.rsplit("/", 1)[0]
    write_atomic(folder / TESTED_RULES, render_rules(tested, settings.namespace, heartbeat=beat))
    tests, _ = render_rule_tests(tested, settings.namespace, TESTED_RULES, heartbeat=beat)
    write_atomic(root / TESTS_PATH, tests)


class RuleManager:
    """The rule set in force in this process, and its changes."""

    def __init__(self, settings: Settings, store: Store, holder: str,
                 on_change: Callable[[RuleSet], None] = lambda rules: None) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.holder = holder
        self.on_change = on_change
        self.rules: RuleSet = settings.rules
        self.version = 0  # 0: the configuration file's rules, never changed over the API
        self.lock = asyncio.Lock()
        self.reloads = 0
        self.outputs = 0  # times the files were written
        self.synced = 0  # versions taken from another replica
        self.resolved_after_change = 0  # alerts resolved in Alertmanager after a change
        self.follow_ups: set[asyncio.Task[int]] = set()

    @property
    def read_only(self) -> bool:
        return self.settings.managed_rules.mode == "read-only"

    @property
    def output(self) -> Path | None:
        out = self.settings.managed_rules.output
        return None if out is None else Path(out)

    def settings_for(self, rules: RuleSet) -> Settings:
        return settings_with(self.settings, rules)

    # --- start and follow ----------------------------------------------------------------

    async def start(self) -> None:
        """Take the latest version from the store (the file's rules when there is none, or
        in read-only mode), and write the files when they differ from it."""
        if self.read_only:
            return
        latest = await self.store.rule_version()
        if latest is not None:
            await self._take(latest, "at start")
            if entries_of(self.settings.rules) != list(latest.entries) and latest.version > 1:
                log.warning("rules: version %d of the store is in force (managed over the API);"
                            " the rules of %s are not (alertbridge rules export writes them)",
                            latest.version, self.settings.source)  # fmt: skip
        elif self.output is not None:
            # No version yet: the configuration's rules are in force, and the output holds
            # them (a first change killed after its files were written, before its version
            # was recorded, left them ahead of the store)
            wanted = render_all(self.settings).files
            if _differs(self.output, wanted):
                try:
                    await self._write_and_reload(wanted)
                    log.warning("rules: the files under %s were not the rule set in force:"
                                " written again", self.output)  # fmt: skip
                except (ReloadFailed, WriteFailed) as exc:
                    log.error("rules: the files under %s are not the rule set in force: %s",
                              self.output, exc)  # fmt: skip

    async def follow(self) -> None:
        """Take the versions other replicas record, until cancelled."""
        every = self.settings.managed_rules.sync_interval
        while True:
            await asyncio.sleep(every)
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rules: cannot follow the store's versions (%s); retrying in %ss",
                            exc, every)  # fmt: skip

    async def sync_once(self) -> bool:
        """Take the latest version if another replica recorded it; whether there was one."""
        latest = await self.store.rule_version()
        if latest is None or latest.version == self.version:
            return False
        async with self.lock:
            await self._take(latest, "from another replica")
        self.synced += 1
        return True

    async def _take(self, latest: RuleVersion, why: str) -> None:
        if latest.version == self.version:
            return
        rules = latest.rules()
        if self.output is not None:
            wanted = render_all(self.settings_for(rules)).files
            if _differs(self.output, wanted):
                try:
                    await self._write_and_reload(wanted)
                except (ReloadFailed, WriteFailed) as exc:
                    log.error("rules: version %d is in force here, but not in Prometheus and"
                              " Alertmanager: %s", latest.version, exc)  # fmt: skip
        self._in_force(rules, latest.version)
        log.info("rules: version %d in force (%s)", latest.version, why)

    def _in_force(self, rules: RuleSet, version: int) -> None:
        self.rules, self.version = rules, version
        self.on_change(rules)

    # --- changes -------------------------------------------------------------------------

    async def change(self, actor: str, action: str, rule: str, change: Change,
                     base: int | None = None) -> Applied:  # fmt: skip
        """Apply `change` to the rule set in force (see the module's docstring). `base`: the
        version the caller saw (Conflict when another is in force now)."""
        if self.read_only:
            raise ReadOnly(f"rules are read-only here (managed_rules.mode: read-only in"
                           f" {self.settings.source}): change the file, then run"
                           " alertbridge rules generate")  # fmt: skip
        async with self.lock:
            at = now_ns()
            until = at + LEASE_SECONDS * 1_000_000_000
            if not await self.store.lease(LEASE, self.holder, until, at):
                raise Conflict("another replica is changing the rules; try again in a moment")
            try:
                return await self._change(actor, action, rule, change, base)
            finally:
                await self.store.release(LEASE, self.holder)

    async def _change(self, actor: str, action: str, rule: str, change: Change,
                      base: int | None) -> Applied:  # fmt: skip
        latest = await self.store.rule_version()
        if latest is not None and latest.version != self.version:
            await self._take(latest, "before a change")
        if base is not None and base != self.version:
            raise Conflict(f"the rule set is at version {self.version}, not {base}: read it"
                           " again")  # fmt: skip
        before = self.rules
        after = change(before)
        self._check_policies(after)
        if after == before:
            return Applied(None)
        settings = self.settings_for(after)
        checks: list[str] = []
        if _tools_present():
            changed = {r.name for r in after if before.get(r.name) != r}
            results = await asyncio.to_thread(check_rules, settings, changed)
            failed = [r for r in results if not r.ok]
            if failed:
                raise ChecksFailed(failed)
            checks = [r.name for r in results]
        else:
            log.warning("rules: promtool or amtool missing: the change is checked by the rule"
                        " model only")  # fmt: skip
        written: list[str] = []
        reloaded: list[str] = []
        reloaded_at = time.time()
        if self.output is not None:
            files = render_all(settings).files
            written, reloaded = await self._write_and_reload(files)
        at = now_ns()
        made: list[RuleVersion] = []
        if self.version == 0:  # the file's rules become version 1, this change version 2
            made.append(RuleVersion(1, at, "config", "seeded", "", tuple(entries_of(before)),
                                    ""))  # fmt: skip
        number = self.version + len(made) + 1
        names = [rule] if rule else []
        made.append(RuleVersion(number, at, actor, action, rule, tuple(entries_of(after)),
                                difference(before, after, names)))  # fmt: skip
        for version in made:
            await self.store.add_rule_version(version)
        self._in_force(after, number)
        log.info("rules: version %d by %s: %s %s", number, actor, action, rule or "")
        ended = [r.name for r in before if r.enabled and after.get(r.name) != r]
        if reloaded and ended and self.settings.prometheus.url:
            self._follow_up(ended, reloaded_at)
        return Applied(made[-1], checks, written, reloaded)

    def _follow_up(self, names: list[str], since: float) -> None:
        task = asyncio.create_task(self._resolve_ended(names, since),
                                   name="alertbridge-rules-resolve")  # fmt: skip
        self.follow_ups.add(task)
        task.add_done_callback(self.follow_ups.discard)

    async def settled(self) -> None:
        """Wait for the follow-ups of the changes made so far (tests, shutdown)."""
        while self.follow_ups:
            await asyncio.gather(*self.follow_ups, return_exceptions=True)

    async def _resolve_ended(self, names: list[str], since: float) -> int:
        """Resolve in Alertmanager the alerts of rules changed, disabled or deleted that
        Prometheus no longer has once it evaluated them again.

        Why: Prometheus 2.42 sends no resolution for an alert whose rule a reload changed
        or removed (measured: no notification after the reload); Alertmanager would keep
        the alert firing until its endsAt, four resend delays (4 min by default) after
        Prometheus last sent it, and so would the bridge. This posts the resolution
        Prometheus would have sent: the same labels, endsAt now."""
        try:
            return await ended_in_alertmanager(self.settings, names, since,
                                               self._count_resolved)  # fmt: skip
        except Exception as exc:  # a follow-up: logged, never raised into nobody
            log.warning("rules: could not resolve the alerts the change ended (%s);"
                        " Alertmanager resolves them at their endsAt", exc)  # fmt: skip
            return 0

    def _count_resolved(self, count: int) -> None:
        self.resolved_after_change += count

    def _check_policies(self, rules: RuleSet) -> None:
        policies = {p.name for p in self.settings.escalation.policies}
        for rule in rules:
            if rule.escalation is not None and rule.escalation not in policies:
                known = ", ".join(sorted(policies)) or "none configured"
                why = f"no escalation policy {rule.escalation!r} (policies: {known})"
                raise RuleError(rule.name, "escalation", why)

    # --- files and reloads -----------------------------------------------------------------

    async def _write_and_reload(self, files: Mapping[str, str]) -> tuple[list[str], list[str]]:
        root = self.output
        if root is None:  # (never: callers write only where there is an output)
            return [], []
        previous = {rel: _read(root / rel) for rel in files}
        written = [rel for rel, text in files.items() if previous[rel] != text]
        try:
            await asyncio.to_thread(_write, root, {rel: files[rel] for rel in written})
        except OSError as exc:
            await asyncio.to_thread(_restore, root, {rel: previous[rel] for rel in written},
                                    True)  # fmt: skip
            raise WriteFailed(
                f"cannot write under {root}: {exc.strerror or exc}; nothing was"
                " changed (the bridge needs write access there)"
            ) from None
        self.outputs += 1
        try:
            reloaded = await self.reload()
        except ReloadFailed as exc:
            await asyncio.to_thread(_restore, root, {rel: previous[rel] for rel in written})
            try:
                await self.reload()
                again = "the previous files are back and were reloaded"
            except ReloadFailed as second:
                again = f"the previous files are back; reloading them failed too ({second})"
            raise ReloadFailed(f"{exc}: {again}") from None
        return [str(root / rel) for rel in written], reloaded

    def targets(self) -> list[str]:
        """What is told to reload: Prometheus and every Alertmanager the bridge knows."""
        out = []
        if self.settings.prometheus.url:
            out.append(self.settings.prometheus.url.rstrip("/"))
        am = self.settings.alertmanager
        out += [u.rstrip("/") for u in (am.urls or ((am.url,) if am.url else ()))]
        return out

    async def reload(self) -> list[str]:
        """POST /-/reload to every target; ReloadFailed naming the first that failed."""
        targets = self.targets()
        if not targets:
            return []
        timeout = aiohttp.ClientTimeout(total=RELOAD_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            answers = await asyncio.gather(*(_reload(session, t) for t in targets))
        self.reloads += 1
        failed = [a for a in answers if a]
        if failed:
            raise ReloadFailed(failed[0])
        return [f"{t}/-/reload" for t in targets]


async def _reload(session: aiohttp.ClientSession, target: str) -> str:
    """'' when `target` reloaded, else why not."""
    url = f"{target}/-/reload"
    try:
        async with session.post(url) as response:
            if response.status == 200:
                return ""
            text = (await response.text()).strip()[:300]
            hint = ""
            if response.status == 403 and "Lifecycle" in text:
                hint = " (start Prometheus with --web.enable-lifecycle)"
            return f"reload of {url} failed: HTTP {response.status}: {text}{hint}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"reload of {url} failed: {exc or type(exc).__name__}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None


def _differs(root: Path, files: Mapping[str, str]) -> bool:
    return any(_read(root / rel) != text for rel, text in files.items())


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        write_atomic(root / rel, text)


def _restore(root: Path, previous: Mapping[str, str | None], quiet: bool = False) -> None:
    """Put the previous files back (`quiet`: as far as possible, after a failed write)."""
    for rel, text in previous.items():
        try:
            if text is None:
                (root / rel).unlink(missing_ok=True)
            elif _read(root / rel) != text:
                write_atomic(root / rel, text)
        except OSError:
            if not quiet:
                raise


#: How long a follow-up waits for Prometheus to evaluate the changed rules (at least).
SETTLE_SECONDS = 10.0


async def ended_in_alertmanager(settings: Settings, names: Sequence[str], since: float,
                                count: Callable[[int], None] = lambda n: None) -> int:  # fmt: skip
    """Once every rule group of Prometheus evaluated after `since` (epoch seconds), post to
    every Alertmanager the resolution of each alert of the rules `names` it still has
    active and Prometheus does not (escalation copies, which the bridge posts itself, are
    left alone). How many were resolved."""
    prometheus = (settings.prometheus.url or "").rstrip("/")
    am = settings.alertmanager
    urls = [u.rstrip("/") for u in (am.urls or ((am.url,) if am.url else ()))]
    if not prometheus or not urls:
        return 0
    wanted = set(names)
    timeout = aiohttp.ClientTimeout(total=10)
    bound = max(SETTLE_SECONDS, 3.0 * settings.prometheus.evaluation_interval)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + bound
        while True:  # bounded: until the deadline
            async with session.get(f"{prometheus}/api/v1/rules") as response:
                groups = (await response.json())["data"]["groups"]
            evaluated = [g.get("lastEvaluation", "") for g in groups]
            if all(_epoch(t) > since for t in evaluated):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus did not evaluate its rules within {bound:g} s")
            await asyncio.sleep(0.25)
        async with session.get(f"{prometheus}/api/v1/alerts") as response:
            active = (await response.json())["data"]["alerts"]
        firing = {_key(a["labels"]) for a in active if a["labels"].get("alertname") in wanted}
        resolved = 0
        for url in urls:
            async with session.get(f"{url}/api/v2/alerts") as response:
                held = await response.json()
            ended = [a for a in held if a["labels"].get("alertname") in wanted
                     and not is_internal(a["labels"])
                     and _key(a["labels"]) not in firing]  # fmt: skip
            if not ended:
                continue
            now = format_micros(now_ns())
            body = [{"labels": a["labels"], "annotations": a.get("annotations", {}),
                     "startsAt": a["startsAt"], "endsAt": now,
                     "generatorURL": a.get("generatorURL", "")} for a in ended]  # fmt: skip
            async with session.post(f"{url}/api/v2/alerts", json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"{url} answered HTTP {response.status}")
            resolved += len(ended)
            log.info("rules: %d alert(s) of %s resolved in %s (their rule changed)",
                     len(ended), ", ".join(sorted(wanted)), url)  # fmt: skip
        count(resolved)
        return resolved


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _epoch(text: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 time (0 for none)."""
    try:
        ns = parse_rfc3339(text)
    except (ValueError, TypeError):
        return 0.0
    return 0.0 if ns is None else ns / 1e9
