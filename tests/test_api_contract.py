"""The OpenAPI document is the API: schemathesis drives the real server (`serve`, on
loopback) with requests generated from the document it serves, with a read key and a write
key: no 5xx, every answer as the document declares it (status, content type, schema), and no
request the document calls valid refused.

What JSON Schema cannot say is left out of the generated requests, and said in the document
instead: that a matcher's regular expression must be RE2's, that `until` comes after `since`,
that a cursor continues a page of its own order, that a batch's errors are at most its
operations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.core.result import Err

from bridge.core.errors import InvalidInput
from bridge.core.matchers import Matcher
from bridge.core.times import now_ns
from bridge.host import apikeys
from bridge.http.openapi import SPEC
from bridge.store.query import parse_when
from tests.support import LOOPBACK, bridge_env, free_port, http_json, running, start_bridge

pytestmark = pytest.mark.e2e
HOOK = "contract-hook"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`serve` with a read key (rita) and a write key (wendy), system metrics pushed; yields
    its URL and the tokens by role."""
    tmp = tmp_path_factory.mktemp("contract")
    keys = tmp / "keys.json"
    tokens = {role: apikeys.add(keys, name, role)[1]
              for name, role in (("rita", "read"), ("wendy", "write"))}  # fmt: skip
    env = bridge_env(ALERTBRIDGE_KEYS_FILE=str(keys), ALERTBRIDGE_WEBHOOK_TOKEN=HOOK,
                     ALERTBRIDGE_TELEMETRY_SYSTEM="push")  # fmt: skip
    # schemathesis sends wrong tokens on purpose (its auth checks): more than the default's
    # 30 a minute from one address, answered 429 (documented) where it checks for 401
    config = tmp / "contract.yml"
    config.write_text('server: {token_failures: "100000/minute"}\n', encoding="utf-8")
    port = free_port()
    with running(start_bridge(tmp, port, env, config)):
        yield f"http://{LOOPBACK}:{port}", tokens


def _regexes_are_re2(matchers: object) -> bool:
    for text in matchers if isinstance(matchers, list) else [matchers]:
        try:
            Matcher.parse(str(text))
        except InvalidInput:
            return False
    return True


def _expressible(case: Any) -> bool:
    """Whether a generated request is one JSON Schema could have told from an invalid one."""
    query = case.query or {}
    if "filter" in query and not _regexes_are_re2(query["filter"]):
        return False
    if "since" in query and (
        "until" in query or parse_when(str(query["since"]), "since", now_ns()) >= now_ns()
    ):
        return False  # until (default now) must come after since: a relation, not a schema
    if "cursor" in query and str(query["cursor"]).startswith("a") != (
        query.get("sort") == "attention"
    ):
        return False  # a cursor continues a page of its own order
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/api/v1/telemetry" and body.get("metrics"):
        return False  # a sample names a metric the configuration declares (none here)
    # a batch's errors are at most its operations
    return not (case.path == "/api/v1/telemetry"
                and body.get("errors", 0) > body.get("operations", 0))  # fmt: skip


#: Operations generated requests cannot drive, each tested in its own module instead: the
#: WebSocket (a handshake, then frames: tests/test_websocket.py) and a rule's test (its
#: series are promtool's notation, which no schema says: tests/test_ruletest.py).
NOT_FUZZED = {"GET /api/v1/events/ws", "POST /api/v1/rules/{name}/test"}
#: The operations of the document (the one the server serves: checked below).
OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(SPEC).get_all_operations()
              if not isinstance(result, Err) and result.ok().label not in NOT_FUZZED]  # fmt: skip


def test_the_server_serves_this_document(bridge: tuple[str, dict[str, str]]) -> None:
    assert http_json(f"{bridge[0]}/api/v1/openapi.json") == (200, json.loads(json.dumps(SPEC)))


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.label for o in OPERATIONS])
def test_the_document_is_the_api(operation: Any, bridge: tuple[str, dict[str, str]]) -> None:
    """Generated requests of each operation, each with the read key and with the write key
    (the webhook with its token)."""
    base, tokens = bridge
    # An event stream never ends: it is read for this long, its head and first events.
    timeout = 0.5 if operation.path == "/api/v1/events/stream" else 10.0

    session = requests.Session()  # closed below: its sockets would warn when collected

    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(operation.as_strategy())
    def each(case: Any) -> None:
        assume(_expressible(case))
        for role in ("read", "write"):
            token = HOOK if case.path == "/api/v1/alertmanager" else tokens[role]
            case.call_and_validate(base_url=base, timeout=timeout, session=session,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    with session:
        each()


def test_a_wrong_method_is_told_the_allowed_ones(bridge: tuple[str, dict[str, str]]) -> None:
    """405 carries Allow (RFC 9110), as every error, in the JSON shape."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{bridge[0]}/api/v1/alerts", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    with info.value:
        assert info.value.code == 405
        assert set(re.split(r",\s*", info.value.headers["Allow"])) >= {"GET"}


def test_every_operation_is_fuzzed_or_said_not_to_be() -> None:
    labels = {o.label for o in OPERATIONS}
    every = {r.ok().label for r in schemathesis.openapi.from_dict(SPEC).get_all_operations()
             if not isinstance(r, Err)}  # fmt: skip
    assert every - labels == NOT_FUZZED
