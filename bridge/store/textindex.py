"""The free-text index both stores keep (issue 35): the page's search (`q`, a substring of an
episode's summary, its description or one of its notes, case-insensitive) answered from
trigrams instead of a read of every alert.

Only resolved episodes are in it: a firing one's repeats change its texts ($value), and
re-indexing each change cost more than the rest of the repeat (SQLite 35-135 us an alert;
PostgreSQL a non-HOT update); a search tests the firing episodes, few, by their own texts.

- SQLite (migration 14): a contentless FTS5 table `alert_text` with the trigram tokenizer,
  one row per resolved episode (rowid = the alert's id; its summary and description), kept
  by triggers on `alerts` in the writing transaction (a resolved insert; a resolution, a
  reopening, a change of a resolved row's texts; a delete, retention's included). FTS5
  matches a phrase of trigrams as a substring, case folded, but walks every trigram's list
  for each row its rarest one names (a 10-character text held by 0.2 % of 1,000,000 alerts:
  32 ms, most of it in trigrams every alert holds). So a search first counts, up to RARE,
  the episodes of a few of its trigrams (PROBED, spread over it), and when some are held by
  fewer, asks for the episodes holding all of those (a superset of the holders, fewer than
  RARE, read in a few milliseconds: "on i7:9100" 32 -> 4 ms; the listing then judges them);
  else the whole phrase, whose cost grows with its rarest trigram's episodes.
- PostgreSQL (migration 10): a table `alert_texts` (the alert's id, its two texts as one,
  `TEXT_OF`) with a GIN index of pg_trgm, which ILIKE uses, kept by statement triggers from
  the transition tables (set-based).

Before the index, a search tests the newest DENSE_WINDOW episodes: a text DENSE_HITS of
them hold is read in order (a page fills soon), not looked up.

Notes are few (people write them) and are read from the partial index of note events both
stores keep. As for the label index, a search finds candidates, and then:

- none: the page is empty, without reading an alert;
- a few episodes (at most labelindex.MAX_EPISODES): those ids, sorted and filtered as any
  listing;
- more, or a text shorter than a trigram (MIN_CHARS): the listing reads alerts in its own
  order testing each, as before (a text that common fills a page after a bounded read).

The index only narrows: the listing still tests every row it returns with the same LIKE
(SQLite: ASCII case-insensitive; PostgreSQL: ILIKE), so an answer equals a full scan's
(property-tested in tests/test_text_index.py). Trigrams fold case further than LIKE does, so
they find a superset, never less.
"""

from __future__ import annotations

#: A search shorter than this (in characters) has no trigram to look up.
MIN_CHARS = 3


#: A text this many of the newest DENSE_WINDOW episodes hold is dense: a listing reading in
#: order fills a page of it after a short read, sooner than the index names its episodes
#: (PostgreSQL builds the bitmap of every holder first: 65-135 ms at 1,000,000 for a text
#: 10 % or all of the alerts hold, against the walk's few).
DENSE_HITS = 50
DENSE_WINDOW = 1000
#: A trigram held by fewer episodes than this is rare: SQLite looks a search up by its rare
#: trigrams alone when it has some (each probe reads at most this many ids).
RARE = 2048
#: The trigrams of a search whose frequency SQLite probes (spread over the text).
PROBED = 8


def trigrams(text: str) -> list[str]:
    """The distinct trigrams of `text` (its 3-character windows, as FTS5's trigram tokenizer
    makes them), at most PROBED of them, spread over the text."""
    found = list(dict.fromkeys(text[i : i + 3] for i in range(len(text) - 2)))
    if len(found) <= PROBED:
        return found
    step = (len(found) - 1) / (PROBED - 1)
    return [found[round(n * step)] for n in range(PROBED)]


def verbatim_in_json(text: str) -> bool:
    """Whether `text` is written as it is inside any JSON string holding it: printable ASCII
    but the quote, the backslash and the slash (which an encoder may escape; orjson and json
    write the rest verbatim). Then a LIKE over a row's raw annotations JSON finds every row
    whose summary or description holds it (maybe more, judged after) without parsing it."""
    return text.isascii() and text.isprintable() and not set(text) & {'"', "\\", "/"}


def like_pattern(text: str) -> str:
    """The LIKE pattern of a substring search, its wildcards escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_phrase(text: str) -> str:
    """The FTS5 query that matches `text` as a substring (a phrase: double quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'
