"""Fuzzing: random bytes and malformed envelopes thrown at a worker's queue,
random bodies at the HTTP gateways (hypothesis). The worker never dies and
never runs anything; the gateways answer 4xx (or a protocol-level error),
never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcapp.testing import wait_for
from tests.http_helpers import basic, caller  # noqa: F401  (fixture)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ENVELOPE_KEYS = ["v", "id", "procedure", "args", "kwargs", "deadline", "reply_to", "kind", "topic", "payload", "service", "attempt", "handlers", "stream", "window"]
ENVELOPES = st.dictionaries(st.sampled_from(ENVELOPE_KEYS), JSON, max_size=10)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def test_the_worker_survives_random_messages(client: Any, worker: Any) -> None:
    sent: list[int] = [0]

    @FUZZ
    @given(raw=st.binary(max_size=300), envelope=ENVELOPES, sign=st.booleans())
    def throw(raw: bytes, envelope: dict[str, Any], sign: bool) -> None:
        try:
            frame = client.signer.pack(envelope) if sign else raw
        except (TypeError, ValueError):
            frame = raw
        client.transport.enqueue([("tests", frame)], 100_000)
        sent[0] += 1

    throw()
    wait_for(lambda: client.transport.redis.xlen(f"{client.transport.ns}:{{tests}}:requests") == 0, 20, message="every message handled")
    assert worker.executor.calls_served == 0  # nothing ran
    assert client.call("tests.echo", "still alive") == "still alive"
    stats = client.transport.stats("tests")
    assert stats.get("rejected", 0) + stats.get("expired", 0) + stats.get("events_unhandled", 0) >= sent[0] * 0.9


@pytest.mark.django_db(transaction=True)
def test_the_gateways_never_answer_5xx(caller: Any, worker: Any) -> None:  # noqa: F811
    http = HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))
    methods = st.sampled_from(["calculator.add", "math.fib", "tests.echo", "nope.x", "rpc.x", "system.listMethods", ""]) | st.text(max_size=12)

    @FUZZ
    @given(body=st.binary(max_size=200), call=st.fixed_dictionaries({"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods, "params": JSON, "id": JSON}), batch=st.lists(ENVELOPES, max_size=3))
    def throw(body: bytes, call: dict[str, Any], batch: list[Any]) -> None:
        import json

        def dumps(value: Any) -> bytes:  # the standard library: integers beyond 64 bits too
            return json.dumps(value).encode()

        # Random bytes are refused with a 4xx. A well-formed envelope may be a
        # real call, whose outcome (a remote error, a timeout) the gateway
        # reports as 502/503/504; never a 500.
        for path, data, kind, called in (
            ("/rpc/jsonrpc/", body, "application/json", False),
            ("/rpc/jsonrpc/", dumps(call), "application/json", True),
            ("/rpc/jsonrpc/", dumps(batch), "application/json", True),
            ("/rpc/xmlrpc/", body, "text/xml", False),
            ("/rpc/call/calculator.add/", body, "application/json", body.strip().startswith((b"{", b"["))),
            ("/rpc/call/calculator.add/", dumps(call.get("params")), "application/json", True),
        ):
            answer = http.generic("POST", path, data, content_type=kind)
            allowed = (502, 503, 504) if called else ()
            assert answer.status_code < 500 or answer.status_code in allowed, (path, data, answer.status_code, answer.content[:300])

    throw()
