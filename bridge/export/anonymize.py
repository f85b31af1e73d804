"""Pseudonyms and scrubbing: what an anonymised export replaces, and with what.

Every label value outside an allowlist, and every person (ackers, assignees, authors of
notes and actions), becomes a keyed HMAC-SHA256 pseudonym, stable for a key so that exports
of one deployment can be joined. The same values are scrubbed out of every free-text field
of every record (annotations, comments, notes, URLs), whichever alert they belong to: a note
on one alert may name the host of another. Each value is looked for as written,
percent-encoded (as URLs carry it: %20 or +, either case of hex) and JSON-escaped, by one
Aho-Corasick automaton over all of them (linear in the text, whatever their number); where
matches overlap, the whole span they cover is replaced, so no fragment of a value remains.

Label names and annotation keys are the schema, not data: they are kept. Fingerprints are
pseudonymised in their own column; as hashes of the labels they reveal no value and are not
looked for in free text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick
import orjson

from bridge.store.records import SYSTEM_ACTORS

#: Label names whose values describe the rule, not the system or people: kept as they are.
ALLOWED_LABELS = frozenset(
    {"alertname", "severity", "metric", "job", "status", "le", "quantile", "state"}
)


def text_forms(value: str) -> set[str]:
    """The ways a value can be written in free text: as is, percent-encoded (path and query
    style, upper and lower case hex, with the separators URLs leave alone or not) and escaped
    in JSON (with and without \\u escapes)."""
    forms = {value}
    for safe in ("", "/", ":/@"):
        for encoded in (quote(value, safe=safe), quote_plus(value, safe=safe)):
            forms.add(encoded)
            forms.add(_lower_hex(encoded))
    forms.add(json.dumps(value)[1:-1])
    forms.add(orjson.dumps(value).decode()[1:-1])
    return {form for form in forms if form}


def _lower_hex(encoded: str) -> str:
    parts = encoded.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


class Scrubber:
    """Replaces every form of every value in a text by the value's pseudonym.

    >>> s = Scrubber(["secretab", "bcsecret"], lambda v: "<" + v[0] + ">")
    >>> s("x secretabcsecret y")
    'x <s><b> y'
    """

    def __init__(self, values: Iterable[str], pseudonym: Callable[[str], str]) -> None:
        self._automaton: Any = None
        forms: dict[str, str] = {}
        for value in sorted(set(values), key=lambda v: (-len(v), v)):
            if value:
                for form in text_forms(value):
                    forms.setdefault(form, value)  # a form two values share: the longer's
        self.values = len(set(forms.values()))
        if forms:
            automaton = ahocorasick.Automaton()
            for form, value in forms.items():
                automaton.add_word(form, (len(form), pseudonym(value)))
            automaton.make_automaton()
            self._automaton = automaton

    def __call__(self, text: str) -> str:
        if self._automaton is None or not text:
            return text
        matches = sorted(
            (end + 1 - length, end + 1, replacement)
            for end, (length, replacement) in self._automaton.iter(text)
        )
        if not matches:
            return text
        out: list[str] = []
        position, i, count = 0, 0, len(matches)
        while i < count:
            start = matches[i][0]
            best = matches[i]
            while i < count and matches[i][0] == start:  # the longest match at this start
                best = max(best, matches[i], key=lambda m: m[1])
                i += 1
            replacements, covered = [best[2]], best[1]
            while True:  # extend over the matches that overlap what is covered
                reach = None
                while i < count and matches[i][0] < covered:
                    if matches[i][1] > covered and (reach is None or matches[i][1] > reach[1]):
                        reach = matches[i]
                    i += 1
                if reach is None:
                    break
                replacements.append(reach[2])
                covered = reach[1]
            out += (text[position:start], *replacements)
            position = covered
        out.append(text[position:])
        return "".join(out)


class Anonymizer:
    """Keyed pseudonyms, and a Scrubber of the given sensitive values.

    >>> a = Anonymizer(b"k", sensitive=["db-7"])
    >>> a.pseudonym("db-7") == a.pseudonym("db-7") != a.pseudonym("db-8")
    True
    >>> a.scrub("db-7 is down") == a.pseudonym("db-7") + " is down"
    True
    """

    def __init__(
        self,
        key: bytes,
        allowed: frozenset[str] = ALLOWED_LABELS,
        sensitive: Iterable[str] = (),
    ) -> None:
        self.key = key
        self.allowed = allowed
        self._cache: dict[str, str] = {}
        # HMAC-SHA256 (RFC 2104) from the two keyed hash states, copied per value: hashlib's C
        # objects throughout, no key schedule and none of hmac.HMAC's Python layers per value.
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.scrub = Scrubber(sensitive, self.pseudonym)

    def pseudonym(self, value: str) -> str:
        """The pseudonym of a value (memoised: label values and names repeat)."""
        cached = self._cache.get(value)
        if cached is None:
            cached = self._hmac(value)
            if len(self._cache) >= 50_000:  # bounded, so memory stays flat in the row count
                self._cache.clear()
            self._cache[value] = cached
        return cached

    def _hmac(self, value: str) -> str:
        """anon- and the first 16 hex digits of HMAC-SHA256(key, value)."""
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"anon-{outer.digest()[:8].hex()}"

    def fingerprint(self, fingerprint: str) -> str:
        """The pseudonym of a fingerprint (not memoised: one per label set, too many to keep)."""
        return self._hmac(fingerprint)

    def person(self, name: str) -> str:
        """A person's pseudonym; the system's own actors stay readable."""
        return name if name in SYSTEM_ACTORS else self.pseudonym(name)

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Labels with every value outside the allowlist pseudonymised."""
        return {k: v if k in self.allowed else self.pseudonym(v) for k, v in labels.items()}


def sensitive_values(
    label_sets: Iterable[Mapping[str, str]],
    people: Iterable[str],
    allowed: frozenset[str] = ALLOWED_LABELS,
) -> set[str]:
    """What an export scrubs from free text: label values outside the allowlist, people."""
    values = {v for labels in label_sets for k, v in labels.items() if k not in allowed and v}
    return values | {p for p in people if p and p not in SYSTEM_ACTORS}
