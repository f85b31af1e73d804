"""Settings: one frozen object built once from the YAML file, then ALERTBRIDGE_* env, then flags.

Secrets (tokens) come only from the environment or from files named in the config or env;
`Secret` never shows its value in repr or str, so it cannot leak into logs by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml
from limits import parse as parse_rate

from bridge.channels import CHANNELS, ChannelConfigError
from bridge.core.alerts import AlertLimits
from bridge.core.catalog import BUILT_IN_SERIES
from bridge.core.custom import CustomMetric, load_metrics, with_expr
from bridge.core.enrichment import EnrichRule, load_enrichment
from bridge.core.errors import ConfigError, RuleError
from bridge.core.model import Severity, comma_list
from bridge.core.oncall import CalendarFactory, LayerKind, OnCall, Person, load_oncall
from bridge.core.policies import (
    PERSON_RECEIVER,
    EscalationSettings,
    load_escalation,
    positive_duration,
)
from bridge.core.rulebook import MODES as MANAGED_MODES
from bridge.core.rules import RuleSet, load_rules
from bridge.core.times import parse_duration
from bridge.store import is_url

CONFIG_ENV = "ALERTBRIDGE_CONFIG"
NAMESPACE_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Receiver types: Alertmanager 0.25's own integrations, and msteams (which 0.25 lacks: the
#: bridge's adapter delivers it, or 0.27+'s msteams_configs, 0.28+'s msteamsv2_configs).
#: libyaml's safe loader where PyYAML was built with it (the wheels are): a configuration of
#: 1,000 schedules took the escalation worker 1.5 s to parse in Python at its start, alerts
#: waiting meanwhile (bench.escalation --schedules).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
RECEIVER_TYPES = (
    "slack", "discord", "pagerduty", "email", "webhook", "opsgenie", "telegram", "webex",
    "pushover", "victorops", "wechat", "sns", "msteams",
)  # fmt: skip
#: Alertmanager versions whose configuration can be generated.
ALERTMANAGER_VERSIONS = ("0.25", "0.26", "0.27", "0.28")
BRIDGE_RECEIVER = "alertbridge"
#: server.stream_priority's values (bridge.http.fanout).
STREAM_PRIORITIES = ("idle", "normal")


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value that never prints.

    >>> Secret("s3cret")
    Secret('********')
    """

    value: str = field(repr=False)
    #: The value as bytes, for constant-time comparison (os.environ decodes bytes that are
    #: not UTF-8 as surrogates: they are encoded back).
    data: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", self.value.encode("utf-8", "surrogateescape"))

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Receiver:
    """An extra Alertmanager receiver (a notification channel) from config."""

    name: str
    type: str
    severities: tuple[Severity, ...]
    config: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 9470
    db: str = "alertbridge.db"
    webhook_token: Secret | None = None
    api_token: Secret | None = None
    #: The largest request body: what Alertmanager sends for a group of 10,000 alerts with
    #: room to spare (a 2,500-alert group is 1.1 MB); past it the answer is 413.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Webhook bodies in flight at once, server-wide; past it 503, which senders retry.
    max_bodies_in_flight_bytes: int = 128 * 1024 * 1024
    max_connections: int = 1024  # lowered to fit the open-files limit (bridge.http.server)
    header_timeout: int = 5  # seconds to send a request's head once it began
    body_timeout: int = 10  # seconds to send the body (Alertmanager 0.25 cuts at ~10 s)
    keepalive_timeout: int = 30  # an idle connection is closed after this
    query_timeout: int = 5  # a read of the store running longer is aborted
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides IPs and localhost; "*": any
    #: The URL operators reach this bridge at (links in notifications); None: no links.
    public_url: str | None = None
    #: How long an acknowledgement link in an escalation's notification works, from the
    #: step that sent it (it stops working sooner once the alert is resolved or acked).
    ack_link_duration: int = 86400
    #: The API keys file (bridge.host.apikeys); None: `<db>.keys.json` beside a SQLite file.
    keys_file: str | None = None
    #: The stream worker's CPU scheduling (bridge.http.fanout): "idle" (SCHED_IDLE: it runs
    #: when ingestion leaves a core free) or "normal" (the server's own).
    stream_priority: str = "idle"
    #: A stream that does not read what it is sent down to a few KiB within this many seconds
    #: is cut (reset; its client resumes by Last-Event-ID): a stalled reader holds no memory,
    #: connection or stream slot for longer (bridge.http.peers).
    stream_drain_timeout: int = 30
    #: The term of the lease one replica holds for the background work done once across
    #: replicas (bridge.workers.leader), renewed every third of it; a replica that stops
    #: renewing is replaced after it.
    lease_duration: int = 15
    #: Grafana's webhook HMAC signature (its contact point's "HMAC Signature"): the secret
    #: from ALERTBRIDGE_GRAFANA_HMAC_SECRET (or _FILE), never in this file; its header, and
    #: the timestamp header when one is set there (the signature then covers "ts:body", and
    #: a timestamp more than grafana_max_skew seconds off is refused as a replay).
    grafana_hmac_secret: Secret | None = None
    #: A Slack app's signing secret (ALERTBRIDGE_SLACK_SIGNING_SECRET or _FILE): its buttons
    #: acknowledge and resolve (bridge.http.slack); None: no Slack app.
    slack_signing_secret: Secret | None = None
    #: The key of the export's pseudonyms: ALERTBRIDGE_EXPORT_KEY (or _FILE), never in this
    #: file; None: one generated and kept in the database at the first export.
    export_key: Secret | None = None
    #: The file holding the PostgreSQL password (env ALERTBRIDGE_STORE_PASSWORD_FILE); None:
    #: libpq's PGPASSWORD or PGPASSFILE. Never in the URL, which is logged.
    db_password_file: str | None = None
    grafana_signature_header: str = "X-Grafana-Alerting-Signature"
    grafana_timestamp_header: str = ""
    grafana_max_skew: int = 300
    #: Attempts at credentials (bridge.http.ratelimit): sign-ins per client address and per
    #: key, wrong bearer tokens per client address; past them 429. Rates as "10/minute".
    signin_attempts: str = "10/minute"
    token_failures: str = "30/minute"  # noqa: S105 - a rate, not a secret

    @property
    def keys_path(self) -> str | None:
        """The keys file; None for a PostgreSQL store given none (replicas share no directory:
        name a file every replica reads, or there are no named keys)."""
        if self.keys_file:
            return self.keys_file
        return None if is_url(self.db) else f"{self.db}.keys.json"


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    url: str | None = None
    scrape_interval: int = 15
    evaluation_interval: int = 15
    scrape_target: str = "127.0.0.1:9470"
    job: str = "alertbridge"
    alertmanager_target: str = "127.0.0.1:9093"

    @property
    def scrape_targets(self) -> list[str]:
        """scrape_target may list several replicas, comma-separated (each is scraped)."""
        return comma_list(self.scrape_target)


DEFAULT_WEBHOOK_URL = "http://127.0.0.1:9470/api/v1/alertmanager"


@dataclass(frozen=True, slots=True)
class AlertmanagerSettings:
    url: str | None = None  # the first of urls (a single Alertmanager)
    urls: tuple[str, ...] = ()  # every replica of the cluster
    #: Every bridge replica the generated receiver notifies (one webhook config each); the
    #: config's `webhook_url` is a list of one. One field, so that nothing can set one and
    #: leave the other behind (`dev` once did: its Alertmanager notified the default port).
    webhook_urls: tuple[str, ...] = (DEFAULT_WEBHOOK_URL,)
    webhook_token_file: str = "/etc/alertmanager/alertbridge-webhook-token"  # noqa: S105 a path
    group_wait: int = 30
    group_interval: int = 300
    repeat_interval: int = 4 * 3600
    reconcile_interval: int = 30
    silence_duration: int = 3600  # each ack silence lasts this long, extended while firing
    max_ack_duration: int = 0  # 0: an ack lasts until resolution
    # How long a replica must have been up before its alert list is trusted to be complete
    # (Prometheus resends firing alerts every --rules.alert.resend-delay, 1 m by default, at
    # an evaluation): 0 means 1 m plus two of prometheus.evaluation_interval.
    resend_window: int = 0
    #: The Alertmanager the configuration is generated for (which integrations it has).
    version: str = "0.25"
    receivers: tuple[Receiver, ...] = ()

    @property
    def webhook_url(self) -> str:
        """The first replica's webhook URL."""
        return self.webhook_urls[0]

    def trust_after(self, evaluation_interval: int) -> int:
        """Seconds a replica must be up before its list of alerts is trusted."""
        return self.resend_window or 60 + 2 * evaluation_interval


SYSTEM_SOURCES = ("psutil", "push", "off")


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Where system metrics come from and how snapshots are taken."""

    system: str = "psutil"  # psutil: sampled here; push: set via the API; off: not exported
    sample_interval: int = 5
    window: int = 300
    max_latencies_per_push: int = 10_000


@dataclass(frozen=True, slots=True)
class ManagedRulesSettings:
    """Rules managed while running (bridge.generate.managed)."""

    #: api: changes over the API, kept as versions in the store; read-only: the file's rules
    mode: str = "api"
    #: where the bridge writes what `rules generate --out` writes, after each change, for
    #: Prometheus and Alertmanager to reload (None: the rules change in the bridge only)
    output: str | None = None
    #: how often a replica looks for a version another replica made
    sync_interval: int = 5


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    """The dead man's switch: an always-firing rule routed to the bridge every `interval`;
    silent for `timeout`, the bridge raises AlertingPipelineSilent and tells `notify` (a
    webhook or msteams receiver) directly, not through Alertmanager."""

    enabled: bool = False
    interval: int = 60
    timeout: int = 300
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, validated.

    >>> Settings().namespace
    'telemetry'
    """

    namespace: str = "telemetry"
    rules: RuleSet = field(default_factory=RuleSet.default)
    server: ServerSettings = field(default_factory=ServerSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = field(default_factory=AlertmanagerSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    limits: AlertLimits = field(default_factory=AlertLimits)
    escalation: EscalationSettings = field(default_factory=EscalationSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    managed_rules: ManagedRulesSettings = field(default_factory=ManagedRulesSettings)
    #: The metrics the application declares (bridge.core.custom).
    metrics: tuple[CustomMetric, ...] = ()
    enrichment: tuple[EnrichRule, ...] = ()
    #: People and on-call schedules (bridge.core.oncall).
    oncall: OnCall = field(default_factory=lambda: OnCall({}, {}))
    source: str = "<defaults>"


def _section(raw: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, "must be a mapping")
    return value


def _typed(cls: type[Any], raw: Mapping[str, Any], prefix: str, source: str,
           origins: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Check keys against a settings dataclass and coerce durations and ints. An error names
    where its setting came from: `origins` (setting -> env variable or flag), else `source`."""
    known = {f.name: f for f in fields(cls) if f.init}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}"
        if key not in known or known[key].type in ("Secret | None", "tuple[Receiver, ...]"):
            raise ConfigError(source, name, "unknown setting")
        default = getattr(cls(), key)
        try:
            if key.endswith(("_interval", "_wait", "_duration", "_timeout", "window")):
                out[key] = parse_duration(value)
                if out[key] == 0 and key not in ("max_ack_duration", "resend_window"):
                    raise ValueError("must be longer than 0s")
            elif isinstance(default, tuple):
                if not isinstance(value, list) or not all(
                    isinstance(v, str) and v.strip() for v in value
                ):
                    raise ValueError("must be a list of non-empty strings")
                out[key] = tuple(value)
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"must be a positive integer, got {value!r}")
                out[key] = value
            elif default is None or isinstance(default, str):
                if key == "version" and isinstance(value, int | float):
                    raise ValueError(f'a text: quote it, as version: "{value}"')
                if (
                    key.endswith("url")
                    and value is not None
                    and not str(value).startswith(("http://", "https://"))
                ):
                    raise ValueError(f"must be an http(s) URL, got {value!r}")
                if not isinstance(value, str) or not value:
                    raise ValueError(f"must be a non-empty string, got {value!r}")
                out[key] = value
            else:  # pragma: no cover - every field is one of the kinds above
                raise ValueError("unsupported setting")
        except ValueError as exc:
            raise ConfigError((origins or {}).get(name, source), name, str(exc)) from None
    return out


def _calendars(source: str) -> Callable[[Mapping[str, Person]], CalendarFactory]:
    """Calendar layers (`calendar: {file: PATH}`): the file read at load, a path relative
    to the configuration file's directory."""
    base = Path(source).parent if source != "<defaults>" else Path.cwd()

    def for_people(people: Mapping[str, Person]) -> CalendarFactory:
        def make(name: str, raw: object, key: str) -> LayerKind:
            # (imported here: icalendar and its dependencies are 140 modules and 9,000
            # objects every later garbage collection walks, in every process, for a
            # feature few configurations use)
            from bridge.core.ical import CalendarLayer, addresses_of, read_calendar

            if not isinstance(raw, Mapping) or set(raw) != {"file"}:
                raise ConfigError(source, key, "must be {file: PATH} (an iCalendar file)")
            path = base / str(raw["file"])
            try:
                calendar = read_calendar(path.read_bytes())
            except OSError as exc:
                raise ConfigError(source, f"{key}.file",
                                  f"cannot read {path}: {exc.strerror}") from None  # fmt: skip
            except ValueError as exc:
                raise ConfigError(source, f"{key}.file", f"{path}: {exc}") from None
            return CalendarLayer(name, calendar, addresses_of(people), str(raw["file"]))

        return make

    return for_people


def person_contacts(oncall: OnCall) -> list[Receiver]:
    """Each person's contact methods as receivers named person-NAME (one per method, in
    order; every severity: a page is for whoever it is sent to)."""
    every = tuple(Severity)
    return [Receiver(PERSON_RECEIVER.format(name), c.type, every, c.config)
            for name, person in sorted(oncall.people.items()) for c in person.contacts]  # fmt: skip


def _check_contacts(oncall: OnCall, source: str) -> None:
    """People's contact methods: receiver types, each checked as a receiver's config is;
    one Teams method a person at most (the adapter knows a receiver by its name)."""
    for name, person in oncall.people.items():
        for n, contact in enumerate(person.contacts):
            key = f"people.{name}.contacts[{n}]"
            if contact.type not in RECEIVER_TYPES:
                raise ConfigError(source, f"{key}.type",
                                  f"must be one of {', '.join(RECEIVER_TYPES)}")  # fmt: skip
            channel = CHANNELS.get(contact.type)
            if channel is not None:
                try:
                    channel.validate(contact.config)
                except ChannelConfigError as exc:
                    raise ConfigError(source, f"{key}.config.{exc.field}", exc.message) from None
        if sum(c.type == "msteams" for c in person.contacts) > 1:
            raise ConfigError(source, f"people.{name}.contacts", "one msteams method at most")


def _receivers(raw: object, source: str) -> tuple[Receiver, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, "alertmanager.receivers", "must be a list")
    out, names = [], {BRIDGE_RECEIVER}
    for i, entry in enumerate(raw):
        key = f"alertmanager.receivers[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(source, key, "must be a mapping")
        unknown = set(entry) - {"name", "type", "severities", "config"}
        if unknown:
            raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown setting")
        name = entry.get("name")
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_-]+$", name):
            raise ConfigError(source, f"{key}.name", "must be a name of letters, digits, _ or -")
        if name in names:
            raise ConfigError(source, f"{key}.name", f"receiver {name!r} is defined twice")
        names.add(name)
        rtype = entry.get("type")
        if rtype not in RECEIVER_TYPES:
            raise ConfigError(source, f"{key}.type", f"must be one of {', '.join(RECEIVER_TYPES)}")
        sev_raw = entry.get("severities", ["critical"])
        if not isinstance(sev_raw, list) or not sev_raw:
            raise ConfigError(source, f"{key}.severities", "must be a non-empty list")
        try:
            severities = tuple(Severity(s) for s in sev_raw)
        except ValueError:
            raise ConfigError(
                source, f"{key}.severities", f"unknown severity in {sev_raw!r}"
            ) from None
        config = entry.get("config") or {}
        if not isinstance(config, Mapping):
            raise ConfigError(source, f"{key}.config", "must be a mapping")
        channel = CHANNELS.get(str(rtype))
        if channel is not None:  # one the bridge delivers itself: checked by its integration
            try:
                channel.validate(config)
            except ChannelConfigError as exc:
                raise ConfigError(source, f"{key}.config.{exc.field}", exc.message) from None
        out.append(Receiver(name, rtype, severities, dict(config)))
    return tuple(out)


def _heartbeat(raw: object, source: str, receivers: tuple[Receiver, ...]) -> HeartbeatSettings:
    if raw is None:
        return HeartbeatSettings()
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "heartbeat", "must be a mapping")
    unknown = set(raw) - {"enabled", "interval", "timeout", "notify"}
    if unknown:
        raise ConfigError(source, f"heartbeat.{sorted(unknown)[0]}", "unknown setting")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(source, "heartbeat.enabled", "must be true or false")
    times = {key: positive_duration(raw.get(key, default), source, f"heartbeat.{key}")
             for key, default in (("interval", 60), ("timeout", 300))}  # fmt: skip
    if times["timeout"] < 2 * times["interval"]:
        reason = "must be at least twice the interval (one late heartbeat is normal)"
        raise ConfigError(source, "heartbeat.timeout", reason)
    notify = raw.get("notify")
    if notify is not None:
        target = next((r for r in receivers if r.name == notify), None)
        if target is None or target.type not in ("webhook", "msteams"):
            reason = f"must name a webhook or msteams receiver, got {notify!r}"
            raise ConfigError(source, "heartbeat.notify", reason)
        if target.type == "webhook" and not (target.config.get("url") or
                                             target.config.get("url_file")):  # fmt: skip
            raise ConfigError(source, "heartbeat.notify", f"receiver {notify} has no url")
    return HeartbeatSettings(enabled, times["interval"], times["timeout"], notify)


def _alertmanager(
    fields: dict[str, Any], receivers: tuple[Receiver, ...], source: str, hook: object = None
) -> AlertmanagerSettings:
    """url (one Alertmanager) or urls (a cluster's replicas), not both; url is the first.
    Likewise webhook_url (`hook`) or webhook_urls."""
    url, urls = fields.pop("url", None), fields.pop("urls", ())
    if url and urls:
        raise ConfigError(source, "alertmanager.urls", "give url or urls, not both")
    urls = tuple(urls) or ((url,) if url else ())
    for i, item in enumerate(urls):
        if not item.startswith(("http://", "https://")):
            raise ConfigError(source, f"alertmanager.urls[{i}]", f"must be http(s), got {item!r}")
    version = fields.get("version", "0.25")
    if version not in ALERTMANAGER_VERSIONS:
        choices = ", ".join(ALERTMANAGER_VERSIONS)
        raise ConfigError(
            source, "alertmanager.version", f"must be one of {choices}, got {version!r}"
        )
    if len(set(urls)) != len(urls):
        raise ConfigError(source, "alertmanager.urls", "a replica is listed twice")
    hooks = tuple(fields.pop("webhook_urls", ()))
    if hook is not None and not isinstance(hook, str):
        raise ConfigError(source, "alertmanager.webhook_url", f"must be a string, got {hook!r}")
    if hook and hooks:
        raise ConfigError(source, "alertmanager.webhook_urls",
                          "give webhook_url or webhook_urls, not both")  # fmt: skip
    hooks = hooks or ((hook,) if hook else (DEFAULT_WEBHOOK_URL,))
    for i, item in enumerate(hooks):
        if not item.startswith(("http://", "https://")):
            raise ConfigError(source, f"alertmanager.webhook_urls[{i}]",
                              f"must be http(s), got {item!r}")  # fmt: skip
    if len(set(hooks)) != len(hooks):
        raise ConfigError(source, "alertmanager.webhook_urls", "a replica is listed twice")
    return AlertmanagerSettings(
        url=urls[0] if urls else None, urls=urls, webhook_urls=hooks,
        receivers=receivers, **fields,
    )  # fmt: skip


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    """A token from env NAME, or from the file named by env NAME_FILE."""
    if env.get(name):
        return Secret(env[name])
    path = env.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", "file", f"cannot read: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE", "file", "is empty")
        return Secret(value)
    return None


_ENV_OVERRIDES = {
    "ALERTBRIDGE_NAMESPACE": ("", "namespace"),
    "ALERTBRIDGE_HOST": ("server", "host"),
    "ALERTBRIDGE_PORT": ("server", "port"),
    "ALERTBRIDGE_DB": ("server", "db"),
    "ALERTBRIDGE_KEYS_FILE": ("server", "keys_file"),
    "ALERTBRIDGE_STREAM_PRIORITY": ("server", "stream_priority"),
    "ALERTBRIDGE_LEASE_DURATION": ("server", "lease_duration"),
    "ALERTBRIDGE_STORE_PASSWORD_FILE": ("server", "db_password_file"),
    "ALERTBRIDGE_PROMETHEUS_URL": ("prometheus", "url"),
    "ALERTBRIDGE_PROMETHEUS_SCRAPE_TARGET": ("prometheus", "scrape_target"),
    "ALERTBRIDGE_PROMETHEUS_ALERTMANAGER_TARGET": ("prometheus", "alertmanager_target"),
    "ALERTBRIDGE_PROMETHEUS_SCRAPE_INTERVAL": ("prometheus", "scrape_interval"),
    "ALERTBRIDGE_PROMETHEUS_EVALUATION_INTERVAL": ("prometheus", "evaluation_interval"),
    "ALERTBRIDGE_ALERTMANAGER_URL": ("alertmanager", "url"),
    "ALERTBRIDGE_WEBHOOK_URLS": ("alertmanager", "webhook_urls"),
    "ALERTBRIDGE_WEBHOOK_TOKEN_FILE": ("alertmanager", "webhook_token_file"),
    "ALERTBRIDGE_RULES_MODE": ("managed_rules", "mode"),
    "ALERTBRIDGE_RULES_OUTPUT": ("managed_rules", "output"),
    "ALERTBRIDGE_TELEMETRY_SYSTEM": ("telemetry", "system"),
}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build Settings from a YAML file (or $ALERTBRIDGE_CONFIG), env, then non-None flags.

    Flags: namespace, host, port, db.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, "file", f"cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            raise ConfigError(source, "yaml", str(exc).replace("\n", " ")) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(source, "file", "top level must be a mapping")
        raw = loaded
    unknown = set(raw) - {
        "namespace", "rules", "server", "prometheus", "alertmanager", "telemetry", "limits",
        "escalation", "heartbeat", "enrichment", "people", "schedules", "managed_rules",
        "metrics",
    }  # fmt: skip
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown setting")
    sections: dict[str, dict[str, Any]] = {
        "server": dict(_section(raw, "server", source)),
        "prometheus": dict(_section(raw, "prometheus", source)),
        "alertmanager": dict(_section(raw, "alertmanager", source)),
        "telemetry": dict(_section(raw, "telemetry", source)),
        "limits": dict(_section(raw, "limits", source)),
        "managed_rules": dict(_section(raw, "managed_rules", source)),
        "": {"namespace": raw.get("namespace", "telemetry")},
    }
    #: Setting -> the env variable or flag that gave it (it overrides the file): errors name it.
    origins: dict[str, str] = {}
    for var, (section, key) in _ENV_OVERRIDES.items():
        if var in env:
            value: Any = env[var]
            if key == "port":
                if not (value.isascii() and value.isdigit()):
                    raise ConfigError(var, "port", f"must be a port number, got {value!r}")
                value = int(value)
            if var == "ALERTBRIDGE_WEBHOOK_URLS":
                sections[section].pop("webhook_url", None)
                value = comma_list(value)
            if var == "ALERTBRIDGE_ALERTMANAGER_URL":  # one URL, or a cluster's, comma-separated
                sections[section].pop("url", None)
                sections[section].pop("urls", None)
                if "," in value:
                    key, value = "urls", comma_list(value)
            sections[section][key] = value
            origins[f"{section}.{key}" if section else key] = var
    flag_map = {"namespace": "", "host": "server", "port": "server", "db": "server"}
    for key, value in flags.items():
        if key not in flag_map:
            raise TypeError(f"unknown flag {key}")
        if value is not None:
            sections[flag_map[key]][key] = value
            origins[f"{flag_map[key]}.{key}" if flag_map[key] else key] = f"--{key}"
    namespace = sections[""]["namespace"]
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
        raise ConfigError(source, "namespace", "must match [a-zA-Z_][a-zA-Z0-9_]*")
    am_raw = sections["alertmanager"]
    receivers = _receivers(am_raw.pop("receivers", None), source)
    webhook_url = am_raw.pop("webhook_url", None)  # a list of one: webhook_urls
    server = ServerSettings(**_typed(ServerSettings, sections["server"], "server", source, origins))
    if not 0 < server.port < 65536:
        raise ConfigError(source, "server.port", f"must be 1..65535, got {server.port}")
    for name in ("signin_attempts", "token_failures"):
        try:
            parse_rate(getattr(server, name))
        except ValueError:
            raise ConfigError(origins.get(f"server.{name}", source), f"server.{name}",
                              'must be a rate such as "10/minute"') from None  # fmt: skip
    if server.stream_priority not in STREAM_PRIORITIES:
        choices = ", ".join(STREAM_PRIORITIES)
        raise ConfigError(origins.get("server.stream_priority", source),
                          "server.stream_priority", f"must be one of {choices}")  # fmt: skip
    server = replace(
        server,
        webhook_token=_secret(env, "ALERTBRIDGE_WEBHOOK_TOKEN"),
        api_token=_secret(env, "ALERTBRIDGE_API_TOKEN"),
        grafana_hmac_secret=_secret(env, "ALERTBRIDGE_GRAFANA_HMAC_SECRET"),
        slack_signing_secret=_secret(env, "ALERTBRIDGE_SLACK_SIGNING_SECRET"),
        export_key=_secret(env, "ALERTBRIDGE_EXPORT_KEY"),
    )
    telemetry = TelemetrySettings(
        **_typed(TelemetrySettings, sections["telemetry"], "telemetry", source, origins)
    )
    if telemetry.system not in SYSTEM_SOURCES:
        choices = ", ".join(SYSTEM_SOURCES)
        raise ConfigError(origins.get("telemetry.system", source),
                          "telemetry.system", f"must be one of {choices}")  # fmt: skip
    if telemetry.window <= 0 or telemetry.sample_interval <= 0:
        raise ConfigError(source, "telemetry", "window and sample_interval must be positive")
    metrics = load_metrics(raw.get("metrics"), source, BUILT_IN_SERIES)
    raw_rules = raw.get("rules")
    if metrics and isinstance(raw_rules, list):  # rules on declared metrics: their PromQL
        raw_rules = [with_expr(e, metrics, namespace) if isinstance(e, Mapping) else e
                     for e in raw_rules]  # fmt: skip
    try:
        rules = load_rules(raw_rules, source)
    except RuleError as exc:
        raise ConfigError(source, f"rules.{exc.rule}.{exc.field}", exc.reason) from None
    oncall = load_oncall(raw.get("people"), raw.get("schedules"), source,
                         _calendars(source))  # fmt: skip
    _check_contacts(oncall, source)
    escalation = load_escalation(
        raw.get("escalation"),
        source,
        [r.name for r in receivers],
        {r.name: r.escalation for r in rules if r.escalation},
        oncall,
    )
    heartbeat = _heartbeat(raw.get("heartbeat"), source, receivers)
    managed = ManagedRulesSettings(**_typed(ManagedRulesSettings, sections["managed_rules"],
                                            "managed_rules", source, origins))  # fmt: skip
    if managed.mode not in MANAGED_MODES:
        raise ConfigError(origins.get("managed_rules.mode", source), "managed_rules.mode",
                          f"must be one of {', '.join(MANAGED_MODES)}")  # fmt: skip
    return Settings(
        metrics=metrics,
        managed_rules=managed,
        enrichment=load_enrichment(raw.get("enrichment"), source),
        oncall=oncall,
        heartbeat=heartbeat,
        namespace=namespace,
        rules=rules,
        server=server,
        prometheus=PrometheusSettings(
            **_typed(PrometheusSettings, sections["prometheus"], "prometheus", source, origins)
        ),
        alertmanager=_alertmanager(
            _typed(AlertmanagerSettings, am_raw, "alertmanager", source, origins),
            receivers,
            source,
            webhook_url,
        ),
        telemetry=telemetry,
        limits=AlertLimits(**_typed(AlertLimits, sections["limits"], "limits", source)),
        escalation=escalation,
        source=source,
    )
