"""@procedure, signatures from type hints, and argument checking."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import orjson
import pytest

from rpcapp import procedure
from rpcapp.errors import InvalidParams
from rpcapp.registry import Registry, Spec
from rpcapp.signature import Signature


def make(fn):
    return Signature.of(fn)


def test_text_form():
    def f(a: int, b: float = 1.0, *rest: str, flag: bool | None = None, **extra: int) -> list[int]: ...

    assert make(f).text() == "(a: int, b: float = ..., *rest: str, flag: bool | None = ..., **extra: int) -> list[int]"


def test_int_accepted_for_float_but_bool_not_int():
    def f(x: float, n: int) -> None: ...

    sig = make(f)
    assert sig.bind([1, 2], {}) == ([1, 2], {})
    with pytest.raises(InvalidParams, match="'n' must be int"):
        sig.bind([1.0, True], {})
    with pytest.raises(InvalidParams):
        sig.bind(["1", 2], {})


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ([], {}, "missing argument 'a'"),
        ([1, 2, 3], {}, "extra positional"),
        ([1], {"a": 2}, "multiple values"),
        ([1], {"zzz": 2}, "unexpected argument"),
    ],
)
def test_arity_errors(args, kwargs, message):
    def f(a: int, b: int = 0) -> None: ...

    with pytest.raises(InvalidParams, match=message):
        make(f).bind(args, kwargs, "x.f")


def test_nested_and_optional_types():
    def f(items: list[dict[str, int]], maybe: str | None = None) -> None: ...

    sig = make(f)
    assert sig.bind([[{"a": 1}]], {"maybe": None}) == ([[{"a": 1}]], {"maybe": None})
    with pytest.raises(InvalidParams):
        sig.bind([[{"a": "1"}]], {})
    with pytest.raises(InvalidParams):
        sig.bind([[{"a": 1}]], {"maybe": 3})


def test_rich_types_are_parsed_from_wire_strings():
    def f(when: dt.datetime, day: dt.date, ident: uuid.UUID, amount: decimal.Decimal) -> None: ...

    args, _ = make(f).bind(["2026-01-02T03:04:05+00:00", "2026-01-02", str(uuid.UUID(int=5)), "1.25"], {})
    assert args == [
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.date(2026, 1, 2),
        uuid.UUID(int=5),
        decimal.Decimal("1.25"),
    ]
    with pytest.raises(InvalidParams):
        make(f).bind(["not a date", "2026-01-02", str(uuid.UUID(int=5)), "1"], {})


def test_spec_survives_the_wire_and_checks_the_same():
    reg = Registry()

    @procedure("svc.f", timeout=3, idempotent=True, registry=reg)
    def f(a: int, *, b: list[str]) -> int:
        """Doc."""
        return a

    spec = Spec.from_wire(orjson.loads(orjson.dumps(reg.get("svc.f").spec.to_wire())))
    assert (spec.timeout, spec.idempotent, spec.doc, spec.service) == (3, True, "Doc.", "svc")
    assert spec.signature.bind([1], {"b": ["x"]}) == ([1], {"b": ["x"]})
    with pytest.raises(InvalidParams):
        spec.signature.bind([1], {"b": [1]})


@pytest.mark.parametrize("reserved", ["timeout", "idempotency_key"])
def test_reserved_parameter_names_refused_at_import(reserved):
    ns: dict = {}
    exec(f"def f({reserved}: int) -> None: ...", ns)
    with pytest.raises(TypeError, match="reserved"):
        procedure("svc.g", registry=Registry())(ns["f"])


@pytest.mark.parametrize("name", ["nodot", ".x", "x.", ""])
def test_bad_names_refused(name):
    with pytest.raises(ValueError):
        procedure(name)


def test_discovery_of_rpc_modules():
    from rpcapp.registry import default_registry

    names = set(default_registry.procedures)
    assert {"calculator.add", "calculator.subtract", "calculator.multiply", "calculator.divide", "math.fib"} <= names
    assert "tests.echo" in names
