"""SQL both store implementations run as it is (SQLite and PostgreSQL alike), kept once:
text only, no driver (each implementation runs it on its own connections)."""

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
