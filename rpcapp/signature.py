"""Layer 2: procedure signatures as portable type descriptors.

Type hints become small JSON-able descriptors (``"int"``, ``["list", "str"]``,
``["union", "int", "null"]``) so that a caller that does not have the
function's code (it only read the spec from Redis) checks arguments exactly as
the worker does.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import inspect
import math
import types
import typing
import uuid
from collections import abc
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParams

Desc = Any  # str | list

_SCALARS: dict[Any, str] = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    type(None): "null",
    None: "null",
    _dt.datetime: "datetime",
    _dt.date: "date",
    uuid.UUID: "uuid",
    decimal.Decimal: "decimal",
    typing.Any: "any",
    inspect.Parameter.empty: "any",
    object: "any",
}


def describe(hint: Any) -> Desc:
    """The descriptor of a type hint; unknown types accept anything."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return ["union", *[describe(a) for a in args]]
    if hint in (list, tuple, set) or origin in (list, tuple, set, frozenset):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return ["list", describe(args[0])]
        return ["list", describe(args[0]) if len(args) == 1 else "any"]
    if origin in (abc.Iterator, abc.Iterable, abc.Generator, abc.AsyncIterator, abc.AsyncGenerator):
        return describe(args[0]) if args else "any"  # a streaming procedure: its items
    if hint is dict or origin is dict:
        return ["dict", describe(args[1]) if len(args) == 2 else "any"]
    return "any"


def render(desc: Desc) -> str:
    """Human form of a descriptor, e.g. ``list[int] | None``."""
    if isinstance(desc, str):
        return "None" if desc == "null" else desc
    if desc[0] == "union":
        return " | ".join(render(d) for d in desc[1:])
    if desc[0] == "dict":
        return f"dict[str, {render(desc[1])}]"
    return f"{desc[0]}[{render(desc[1])}]"


class _Mismatch(Exception):
    pass


_PLAIN: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # JSON has no inf or NaN (orjson would send them as null): refused as arguments.
    "float": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v)),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "any": lambda v: True,
}


def coerce(value: Any, desc: Desc) -> Any:
    """Check ``value`` against ``desc``; return it (wire strings parsed for
    datetime, date, UUID and Decimal). Raises _Mismatch."""
    if isinstance(desc, list):
        return _coerce_compound(value, desc)
    check = _PLAIN.get(desc)
    if check is None:
        return _coerce_rich(value, desc)
    if check(value):
        return value
    raise _Mismatch


def _coerce_compound(value: Any, desc: list[Any]) -> Any:
    kind = desc[0]
    if kind == "union":
        for option in desc[1:]:
            try:
                return coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if kind == "list" and isinstance(value, (list, tuple)):
        return [coerce(v, desc[1]) for v in value]
    if kind == "dict" and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: coerce(v, desc[1]) for k, v in value.items()}
    raise _Mismatch


def _coerce_rich(value: Any, desc: str) -> Any:
    try:
        if desc == "datetime":
            return value if isinstance(value, _dt.datetime) else _dt.datetime.fromisoformat(value)
        if desc == "date":
            if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
                return value
            return _dt.date.fromisoformat(value)
        if desc == "uuid":
            return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
        if desc == "decimal":
            if isinstance(value, bool):
                raise _Mismatch
            if isinstance(value, decimal.Decimal):
                return value
            if isinstance(value, (str, int)):
                return decimal.Decimal(value)
    except (TypeError, ValueError, decimal.InvalidOperation, AttributeError) as exc:
        raise _Mismatch from exc
    raise _Mismatch


@dataclass(frozen=True)
class Param:
    name: str
    type: Desc
    kind: str  # "pos", "kw" (keyword-only), "var_pos", "var_kw"
    has_default: bool

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "kind": self.kind, "default": self.has_default}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Param:
        return cls(d["name"], d["type"], d["kind"], bool(d["default"]))


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "pos",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "pos",
    inspect.Parameter.KEYWORD_ONLY: "kw",
    inspect.Parameter.VAR_POSITIONAL: "var_pos",
    inspect.Parameter.VAR_KEYWORD: "var_kw",
}


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    returns: Desc

    @classmethod
    def of(cls, fn: Any) -> Signature:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params = tuple(
            Param(p.name, describe(hints.get(p.name, inspect.Parameter.empty)), _KINDS[p.kind], p.default is not p.empty)
            for p in sig.parameters.values()
        )
        return cls(params, describe(hints.get("return", inspect.Parameter.empty)))

    def text(self) -> str:
        parts = []
        for p in self.params:
            prefix = {"var_pos": "*", "var_kw": "**"}.get(p.kind, "")
            parts.append(f"{prefix}{p.name}: {render(p.type)}" + (" = ..." if p.has_default else ""))
        return f"({', '.join(parts)}) -> {render(self.returns)}"

    def to_wire(self) -> dict[str, Any]:
        return {"params": [p.to_wire() for p in self.params], "returns": self.returns}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Signature:
        return cls(tuple(Param.from_wire(p) for p in d["params"]), d["returns"])

    def bind(self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any], procedure: str = "") -> tuple[list[Any], dict[str, Any]]:
        """Check and coerce arguments; InvalidParams on any mismatch."""
        out_args: list[Any] = []
        out_kwargs: dict[str, Any] = {}
        rest = list(args)
        given = dict(kwargs)
        for p in self.params:
            if p.kind == "var_pos":
                out_args.extend(self._check(p, v, procedure) for v in rest)
                rest = []
            elif p.kind == "var_kw":
                out_kwargs.update({k: self._check(p, v, procedure) for k, v in given.items()})
                given = {}
            elif p.kind == "pos" and rest:
                if p.name in given:
                    raise InvalidParams(f"multiple values for argument {p.name!r}", procedure=procedure)
                out_args.append(self._check(p, rest.pop(0), procedure))
            elif p.name in given:
                out_kwargs[p.name] = self._check(p, given.pop(p.name), procedure)
            elif not p.has_default:
                raise InvalidParams(f"missing argument {p.name!r}", procedure=procedure)
        if rest:
            raise InvalidParams(f"{len(rest)} extra positional argument(s)", procedure=procedure)
        if given:
            raise InvalidParams(f"unexpected argument(s) {sorted(given)}", procedure=procedure)
        return out_args, out_kwargs

    @staticmethod
    def _check(p: Param, value: Any, procedure: str) -> Any:
        try:
            return coerce(value, p.type)
        except _Mismatch:
            raise InvalidParams(
                f"argument {p.name!r} must be {render(p.type)}, not {type(value).__name__}", procedure=procedure
            ) from None
