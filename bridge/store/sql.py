"""SQL both store implementations run as it is (SQLite and PostgreSQL alike), kept once:
text only, no driver (each implementation runs it on its own connections)."""

from collections.abc import Callable, Sequence

from bridge.core.matchers import Matcher
from bridge.store.labelindex import Resolved

#: Merge the rows of one episode that differ below the millisecond, into the first (lowest
#: id): its trail gets the others' events and a "merged" event, its row what they knew more
#: (an acknowledgement and its silence, an assignee, Alertmanager's final resolution, a
#: firing that the first had resolved provisionally, its ack's silence made again); then the
#: starts are split (SQLite's
#: migration 11, PostgreSQL's 6). {now}: the time in ns, as SQL; {least}, {greatest}: the
#: two-argument minimum and maximum.
EPISODE_TWINS = """
CREATE TEMP TABLE twins (gone BIGINT PRIMARY KEY, kept BIGINT NOT NULL);
INSERT INTO twins (gone, kept)
    SELECT b.id, min(a.id) FROM alerts a JOIN alerts b
        ON b.fingerprint = a.fingerprint AND b.id > a.id
        AND b.starts_at BETWEEN a.starts_at - a.starts_at % 1000000
                            AND a.starts_at - a.starts_at % 1000000 + 999999
        AND b.starts_at - b.starts_at % 1000000 = a.starts_at - a.starts_at % 1000000
    GROUP BY b.id;
UPDATE events SET alert_id = (SELECT kept FROM twins WHERE gone = events.alert_id)
    WHERE alert_id IN (SELECT gone FROM twins);
UPDATE alerts SET
    acked_at = g.acked_at, acked_by = g.acked_by, ack_comment = g.ack_comment,
    silence_id = g.silence_id, silence_state = g.silence_state,
    silenced_until = g.silenced_until
    FROM (SELECT t.kept, o.* FROM twins t JOIN alerts o ON o.id = t.gone
          WHERE o.acked_at IS NOT NULL) AS g
    WHERE alerts.id = g.kept AND alerts.acked_at IS NULL;
UPDATE alerts SET assignee = g.assignee
    FROM (SELECT t.kept, o.assignee FROM twins t JOIN alerts o ON o.id = t.gone
          WHERE o.assignee IS NOT NULL) AS g
    WHERE alerts.id = g.kept AND alerts.assignee IS NULL;
UPDATE alerts SET status = 'resolved', ends_at = g.ends_at, resolution = g.resolution
    FROM (SELECT t.kept, o.ends_at, o.resolution FROM twins t JOIN alerts o ON o.id = t.gone
          WHERE o.resolution IN ('alertmanager', 'local')) AS g
    WHERE alerts.id = g.kept AND (alerts.resolution IS NULL
                                  OR alerts.resolution NOT IN ('alertmanager', 'local'));
UPDATE alerts SET status = 'firing', ends_at = NULL, resolution = NULL
    FROM (SELECT t.kept FROM twins t JOIN alerts o ON o.id = t.gone
          WHERE o.status = 'firing') AS g
    WHERE alerts.id = g.kept AND alerts.resolution IN ('inferred', 'manual');
UPDATE alerts SET silence_state = 'pending'
    WHERE id IN (SELECT kept FROM twins) AND status = 'firing' AND acked_at IS NOT NULL
    AND silence_state = 'expired';
UPDATE alerts SET receive_count = alerts.receive_count + g.n,
    first_received_at = {least}(alerts.first_received_at, g.first),
    last_received_at = {greatest}(alerts.last_received_at, g.last)
    FROM (SELECT t.kept, sum(o.receive_count) AS n, min(o.first_received_at) AS first,
                 max(o.last_received_at) AS last
          FROM twins t JOIN alerts o ON o.id = t.gone GROUP BY t.kept) AS g
    WHERE alerts.id = g.kept;
INSERT INTO events (alert_id, at, kind, actor, detail)
    SELECT kept, {now}, 'merged', 'alertbridge',
           'alert ' || gone || ' was this episode (its start given to the nanosecond here,'
           || ' to the millisecond there); its trail is in this one now'
    FROM twins ORDER BY gone;
DELETE FROM alerts WHERE id IN (SELECT gone FROM twins);
UPDATE alerts SET starts_ns = starts_at % 1000000, starts_at = starts_at - starts_at % 1000000
    WHERE starts_at % 1000000 <> 0;
DROP TABLE twins;
"""


#: The rule set managed while running (bridge.core.rulebook): a row per version, the whole
#: rule set in each (`entries`, JSON), what the change did and its difference.
RULE_VERSIONS = """
CREATE TABLE rule_versions (
    version BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    rule TEXT NOT NULL,
    entries TEXT NOT NULL,
    diff TEXT NOT NULL
);
"""

#: The columns of a rule version, in RuleVersion's order (bridge.store.rows.rule_version).
RULE_VERSION_COLUMNS = "version, at, actor, action, rule, entries, diff"


#: The label index (bridge.store.labelindex) and its first build from the alerts stored:
#: SQLite's migration 13, PostgreSQL's 8. {serial}: an integer key the database numbers;
#: {without_rowid}: SQLite's clustering of the postings on their key; {name_index}: how
#: label values are found by name (PostgreSQL: a hash index, a name may be past a B-tree
#: entry's size); {each}: the rows (key, value) of the JSON object in `labels`; {len}: a
#: text's length in characters. A series' and a pair's keys are labelindex.series_key and
#: pair_key. Followed by LABEL_INDEX_BUILD.
LABEL_INDEX = """
CREATE TABLE series (
    id {serial},
    key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL
);
CREATE TABLE label_values (
    id {serial},
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX label_values_name ON label_values {name_index};
CREATE TABLE postings (
    value_id BIGINT NOT NULL,
    series_id BIGINT NOT NULL,
    PRIMARY KEY (value_id, series_id)
){without_rowid};
-- Acknowledged episodes, newest first (a listing of them read every alert; an acknowledgement
-- writes the entry, an ingest none).
CREATE INDEX alerts_acknowledged ON alerts (id) WHERE acked_at IS NOT NULL;
"""

#: Index the alerts with ids above {after} (the migration: all of them; a benchmark that
#: inserts rows directly: those it added); placeholders as LABEL_INDEX's. What is indexed
#: already is skipped.
LABEL_INDEX_BUILD = """
CREATE TEMP TABLE stored_series AS
    SELECT md5({len}(fingerprint) || ':' || fingerprint || labels) AS key, fingerprint, labels
    FROM (SELECT DISTINCT fingerprint, labels FROM alerts WHERE id > {after}) AS d;
INSERT INTO series (key, fingerprint) SELECT key, fingerprint FROM stored_series WHERE true
    ORDER BY key ON CONFLICT (key) DO NOTHING;
INSERT INTO label_values (key, name, value)
    SELECT DISTINCT md5({len}(j.key) || ':' || j.key || j.value), j.key, j.value
    FROM stored_series AS t, {each} AS j WHERE true
    ON CONFLICT (key) DO NOTHING;
INSERT INTO postings (value_id, series_id)
    SELECT DISTINCT v.id, s.id FROM stored_series AS t
    JOIN series AS s ON s.key = t.key
    CROSS JOIN {each} AS j
    JOIN label_values AS v ON v.key = md5({len}(j.key) || ':' || j.key || j.value)
    WHERE true ON CONFLICT (value_id, series_id) DO NOTHING;
DROP TABLE stored_series;
"""


def fingerprints_sql(resolved: Resolved, ids: Callable[[Sequence[int]], str]) -> str | None:
    """SQL: the fingerprints of the series that satisfy `resolved` (not `nothing`); `ids`
    renders a list of value ids as a subquery of the store's dialect. None when the matchers
    exclude nothing (every series can match)."""
    postings = "SELECT series_id FROM postings WHERE value_id IN ({})"
    terms = [f"s.id IN ({postings.format(ids(group))})" for group in resolved.required]
    if resolved.excluded:
        terms.append(f"s.id NOT IN ({postings.format(ids(resolved.excluded))})")
    if not terms:
        return None
    return f"SELECT s.fingerprint FROM series AS s WHERE {' AND '.join(terms)}"  # noqa: S608


def candidates_sql(resolved: Resolved, ids: Callable[[Sequence[int]], str]) -> str | None:
    """SQL: the ids of the episodes whose series satisfy `resolved`, without its LIMIT (as
    fingerprints_sql; None when every series can match)."""
    series = fingerprints_sql(resolved, ids)
    if series is None:
        return None
    return f"SELECT a.id FROM alerts AS a WHERE a.fingerprint IN ({series})"  # noqa: S608


def values_test(m: Matcher, accepted: bool, value: str, regex: str) -> str:
    """SQL: whether a label_values row's value is one the matcher accepts (`accepted`) or
    refuses (labelindex.lookup's "scan"); `value` is the bound matcher value's placeholder,
    `regex` the dialect's anchored match of it ({} the placeholder)."""
    test = {"=": f"value = {value}", "!=": f"value <> {value}"}.get(m.op, regex.format(value))
    # The test is acceptance but for !~, whose test (the regex) is refusal.
    return f"NOT ({test})" if accepted == (m.op == "!~") else test
