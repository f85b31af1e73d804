"""The label index both stores keep (issue 35): postings lists, as Prometheus answers a
matcher, from a label pair to the series (label sets) that carry it.

Tables (SQLite's migration 13, PostgreSQL's 8; sql.LABEL_INDEX):

- `series (id, key, fingerprint)`: one row per distinct (fingerprint, label set) stored;
  `key` is series_key, `fingerprint` how the series finds its episodes (the alerts' index on
  (fingerprint, starts_at)).
- `label_values (id, key, name, value)`: one row per distinct label pair; `key` the MD5 of
  the pair (pair_key). Keys, not the text, are unique: a label value may hold 4,096
  characters, past what a PostgreSQL B-tree entry can.
- `postings (value_id, series_id)`: which series carry which pair.

They are written in the ingest transaction, for a notification's new episodes only (a series
already stored costs one key lookup), and emptied by retention with the episodes (a series
whose last episode goes, and a pair no series carries any more). A listing with matchers asks
the index which fingerprints can match (`resolve`, then the store's SQL), and then:

- none: the page is empty, without reading an alert;
- a few episodes (at most MAX_EPISODES): those ids, sorted and filtered as any listing;
- more: the listing reads alerts in its order as before; matching episodes are then at least
  MAX_EPISODES among all, so the page fills after reading a bounded share of the store.

The index only narrows: every listing still applies the matchers to the rows it returns, so
an answer equals a full scan's (property-tested in tests/test_label_index.py) even where two
label sets share a fingerprint.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.core.matchers import Matcher

#: Past this many episodes whose labels can match, a listing reads alerts in its own order
#: instead (matching alerts are then common enough to fill a page after a bounded read).
MAX_EPISODES = 20_000


def md5_hex(text: str) -> str:
    """The MD5 of a text's UTF-8, in hex (an identity of the index, not a secret: PostgreSQL's
    md5() computes the same in SQL, for the migration)."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def series_key(fingerprint: str, labels: str) -> str:
    """A series' key: the MD5 of its fingerprint's length in characters, a colon, the
    fingerprint and its labels as stored (sorted JSON). The fingerprint is part of it: the
    index finds episodes by fingerprint, and one label set sent under two fingerprints (two
    senders' hashes) is two series."""
    return md5_hex(f"{len(fingerprint)}:{fingerprint}{labels}")


@functools.lru_cache(maxsize=65536)  # a pair recurs in every series carrying it
def pair_key(name: str, value: str) -> str:
    """A label pair's key: the MD5 of the name's length in characters, a colon, the name and
    the value (SQL: md5(length(name) || ':' || name || value))."""
    return md5_hex(f"{len(name)}:{name}{value}")


@dataclass(slots=True)
class NewSeries:
    """The series of a batch of new episodes, by key, each with its fingerprint and labels."""

    by_key: dict[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)

    def add(self, fingerprint: str, labels_json: str, labels: Mapping[str, str]) -> None:
        self.by_key.setdefault(series_key(fingerprint, labels_json), (fingerprint, labels))

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> NewSeries:
        """The series of whole alerts rows (a copy between stores loads them as they are)."""
        made = cls()
        fp, labels = columns.index("fingerprint"), columns.index("labels")
        for row in rows:
            made.add(row[fp], row[labels], orjson.loads(row[labels]))
        return made

    def entries(
        self, made: Mapping[str, int]
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, int]]]:
        """For the series `made` (key -> the id the store gave it): the label values they
        carry (key, name, value; each once), and their postings (the value's key, the series'
        id)."""
        values: dict[str, tuple[str, str, str]] = {}
        postings: list[tuple[str, int]] = []
        for key, series_id in made.items():
            for name, value in self.by_key[key][1].items():
                pair = pair_key(name, value)
                values.setdefault(pair, (pair, name, value))
                postings.append((pair, series_id))
        return list(values.values()), postings


#: A regular expression that is only literal alternatives ("web-1|web-2"), which the index
#: looks up by key instead of testing every value of the label (as Prometheus does).
_LITERALS = re.compile(r"[A-Za-z0-9_:/ @,=-]*(?:\|[A-Za-z0-9_:/ @,=-]*)*")


def literals(m: Matcher) -> frozenset[str] | None:
    """The values a matcher names outright (=, !=, a regex of literal alternatives), when the
    empty string is not among them; None when every stored value of its label must be
    tested."""
    if m.op in ("=", "!="):
        found = frozenset((m.value,))
    elif _LITERALS.fullmatch(m.value):
        found = frozenset(m.value.split("|"))
    else:
        return None
    return None if "" in found else found


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the matchers need of the index, in label-value ids: a series matches when it
    carries one value of every `required` group and none of `excluded`. `nothing`: a group
    is empty (no series can match)."""

    required: tuple[tuple[int, ...], ...]
    excluded: tuple[int, ...]
    nothing: bool = False


def resolve(
    matchers: Sequence[Matcher], values: Mapping[Matcher, Sequence[tuple[int, str]]]
) -> Resolved:
    """The matchers as value ids, from `values`: for each matcher, what lookup() said to read
    (its literals' stored values, tested here; or the values of its label the store selected
    by the matcher itself, taken as they are). A missing label is the empty string, as in
    Alertmanager: a matcher the empty string satisfies matches every series but those carrying
    a value it refuses (their ids excluded); any other matches only the series carrying a value
    it accepts."""
    required: list[tuple[int, ...]] = []
    excluded: set[int] = set()
    for m in matchers:
        stored = values.get(m, ())
        empty = m.matches({})
        if lookup(m)[0] == "keys":  # a handful: tested here
            stored = [(i, v) for i, v in stored if m.matches({m.name: v}) != empty]
        if empty:  # the empty string matches: exclude the values that do not
            excluded.update(i for i, _ in stored)
            continue
        if not stored:
            return Resolved((), (), nothing=True)
        required.append(tuple(i for i, _ in stored))
    required.sort(key=len)
    return Resolved(tuple(required), tuple(sorted(excluded)))


def series_of(rows: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """(fingerprint, labels JSON) rows by series key, each once."""
    return {series_key(fp, labels): (fp, labels) for fp, labels in rows}


def gone_postings(
    gone: Mapping[str, tuple[str, str]], ids: Mapping[str, int]
) -> tuple[list[tuple[str, int]], list[str]]:
    """For series deleted (key -> (fingerprint, labels JSON)) with their ids: their postings
    (the value's key, the series' id), and the keys of the values they carried (each once),
    which go too where no other series carries them."""
    postings: list[tuple[str, int]] = []
    values: dict[str, None] = {}
    for key, series_id in ids.items():
        for name, value in orjson.loads(gone[key][1]).items():
            pair = pair_key(name, value)
            postings.append((pair, series_id))
            values[pair] = None
    return postings, list(values)


def lookup(m: Matcher) -> tuple[str, list[str] | bool]:
    """How a store finds the values a matcher needs: ("keys", pair keys): the stored values
    of its literals(), by key; ("scan", accepted): the values of its label that the matcher
    accepts (True) or refuses (False), selected by the store in SQL (so that a label with a
    million values is read within the query budget, not tested one by one here)."""
    named = literals(m)
    if named is None:
        return "scan", not m.matches({})
    return "keys", [pair_key(m.name, v) for v in sorted(named)]
