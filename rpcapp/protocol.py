"""Layer 0: the wire protocol: frames, codecs, signing and envelopes.

A frame is ``version (1 byte) | codec (1 byte) | HMAC-SHA256 (32 bytes) | body``.
The HMAC covers version, codec and body. ``docs/protocol.md`` is the reference.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson

from .errors import PayloadTooLarge, ProtocolError
from .extras import missing

VERSION = 1
_VERSION_BYTE = bytes([VERSION])
CODEC_JSON = b"j"
CODEC_MSGPACK = b"m"
CODECS = {"json": CODEC_JSON, "msgpack": CODEC_MSGPACK}
SIG_LEN = 32
HEADER_LEN = 2 + SIG_LEN


def derive_key(secret: str | bytes, purpose: str = "rpcapp.signing") -> bytes:
    """Derive a signing key from a project secret (never use the secret itself)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"type {type(value).__name__} is not serialisable")


_msgpack: ModuleType | None = None


def msgpack_module() -> ModuleType:
    """msgpack, imported on first use (the ``rpcapp[msgpack]`` extra); raises
    ``ImproperlyConfigured`` (``MissingExtra`` without Django) naming the extra."""
    global _msgpack
    if _msgpack is None:
        try:
            import msgpack
        except ImportError as exc:
            raise missing("msgpack", 'RPCAPP["CODEC"] = "msgpack"') from exc
        _msgpack = msgpack
    return _msgpack


def encode_body(data: Any, codec: bytes = CODEC_JSON) -> bytes:
    """Serialise a value; raises TypeError for anything not representable."""
    if codec == CODEC_JSON:
        return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)
    return msgpack_module().packb(data, default=_default, use_bin_type=True, datetime=False)


def decode_body(body: bytes, codec: bytes) -> Any:
    if codec == CODEC_JSON:
        return orjson.loads(body)
    if codec == CODEC_MSGPACK:
        try:
            unpackb = msgpack_module().unpackb
        except Exception as exc:  # a peer's msgpack frame, and no msgpack here
            raise ProtocolError(f"cannot decode a msgpack frame: {exc}") from exc
        return unpackb(body, raw=False, strict_map_key=False)
    raise ProtocolError(f"unknown codec {codec!r}")


@dataclass(frozen=True)
class Signer:
    """Signs frames with the first key and accepts any of ``keys`` (rotation)."""

    keys: tuple[bytes, ...]
    codec: bytes = CODEC_JSON

    def __post_init__(self) -> None:
        if self.codec == CODEC_MSGPACK:
            msgpack_module()  # without the extra: fail when configured, not at the first call

    def pack(self, data: Any, limit: int | None = None) -> bytes:
        body = encode_body(data, self.codec)
        if limit is not None and len(body) + HEADER_LEN > limit:
            raise PayloadTooLarge(f"message of {len(body) + HEADER_LEN} bytes is over the limit of {limit}")
        head = _VERSION_BYTE + self.codec
        sig = hmac.new(self.keys[0], head + body, hashlib.sha256).digest()
        return head + sig + body

    def tag(self, *parts: Any) -> str:
        """A hex HMAC binding ``parts`` together (for data kept outside a frame,
        e.g. a call record's replay arguments); see :meth:`verify_tag`."""
        return hmac.new(self.keys[0], _canonical(parts), hashlib.sha256).hexdigest()

    def verify_tag(self, tag: Any, *parts: Any) -> bool:
        """True if ``tag`` is :meth:`tag` of ``parts`` under any accepted key."""
        if not isinstance(tag, str):
            return False
        data = _canonical(parts)
        return any(hmac.compare_digest(tag, hmac.new(key, data, hashlib.sha256).hexdigest()) for key in self.keys)

    def unpack(self, frame: bytes, limit: int | None = None) -> Any:
        """Verify and decode a frame; ProtocolError if malformed, forged or tampered."""
        if not isinstance(frame, (bytes, bytearray)):
            raise ProtocolError("frame is not bytes")
        if limit is not None and len(frame) > limit:
            raise PayloadTooLarge(f"message of {len(frame)} bytes is over the limit of {limit}")
        if len(frame) < HEADER_LEN:
            raise ProtocolError("frame too short")
        if frame[0] != VERSION:
            raise ProtocolError(f"unsupported protocol version {frame[0]}")
        head, sig, body = frame[:2], frame[2:HEADER_LEN], frame[HEADER_LEN:]
        for key in self.keys:
            if hmac.compare_digest(sig, hmac.new(key, head + body, hashlib.sha256).digest()):
                break
        else:
            raise ProtocolError("bad signature")
        try:
            return decode_body(bytes(body), head[1:2])
        except ProtocolError:
            raise
        except Exception as exc:  # any decoder failure is a protocol error
            raise ProtocolError(f"undecodable body: {exc}") from exc


def _canonical(parts: Any) -> bytes:
    """``parts`` as JSON once stored and read back (Decimal and dates as text),
    keys sorted: the same bytes before and after a trip through a database."""
    return b"rpcapp.tag\0" + orjson.dumps(orjson.loads(encode_body(list(parts))), option=orjson.OPT_SORT_KEYS)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Request:
    """A call on its way to a worker."""

    procedure: str
    args: list[Any]
    kwargs: dict[str, Any]
    deadline: int  # absolute, ms since the epoch
    reply_to: str | None  # None for notifications
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    caller: str = ""
    trace_id: str = ""
    parent_id: str | None = None
    idempotency_key: str | None = None
    idempotent: bool = False
    sent_at: int = field(default_factory=now_ms)
    stream: bool = False  # a streaming call: items, then an end frame
    window: int = 0  # streaming: items the worker may send ahead of the caller's acknowledgements

    def to_wire(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"stream": True, "window": self.window} if self.stream else {}
        return {
            "v": VERSION,
            "id": self.id,
            "procedure": self.procedure,
            "args": self.args,
            "kwargs": self.kwargs,
            "deadline": self.deadline,
            "reply_to": self.reply_to,
            "caller": self.caller,
            "trace_id": self.trace_id or self.id,
            "parent_id": self.parent_id,
            "idempotency_key": self.idempotency_key,
            "idempotent": self.idempotent,
            "sent_at": self.sent_at,
            **extra,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Request:
        if not isinstance(data, dict):
            raise ProtocolError("request is not an object")
        try:
            req = cls(
                procedure=_typed(data, "procedure", str),
                args=_typed(data, "args", list),
                kwargs=_typed(data, "kwargs", dict),
                deadline=_typed(data, "deadline", int),
                reply_to=_typed(data, "reply_to", (str, type(None))),
                id=_typed(data, "id", str),
                caller=str(data.get("caller", "")),
                trace_id=str(data.get("trace_id") or data["id"]),
                parent_id=data.get("parent_id"),
                idempotency_key=data.get("idempotency_key"),
                idempotent=bool(data.get("idempotent", False)),
                sent_at=int(data.get("sent_at") or 0),
                stream=data.get("stream") is True,
                window=int(data.get("window") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed request: {exc}") from exc
        if data.get("v") != VERSION:
            raise ProtocolError(f"unsupported envelope version {data.get('v')!r}")
        return req

    @property
    def expired(self) -> bool:
        return now_ms() >= self.deadline


@dataclass
class Event:
    """An event on its way to one subscribing service (``kind: "event"``).

    ``handlers`` is None for a first delivery (every handler of the service
    for the topic) and the names still to run on a retry."""

    topic: str
    payload: Any
    service: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    publisher: str = ""
    attempt: int = 1
    handlers: list[str] | None = None
    sent_at: int = field(default_factory=now_ms)
    expires: int = 0  # absolute, ms since the epoch; 0: sent_at + the receiver's EVENT_TTL
    replay: str = ""  # set by an operator's replay of a parked event: it runs again

    @property
    def marker(self) -> str:
        """What a subscribing service claims before running this delivery:
        each (event id, attempt, replay) runs once."""
        return f"event:{self.id}:{self.attempt}:{self.replay}"

    def expiry(self, ttl_ms: int) -> int:
        return self.expires or (self.sent_at + ttl_ms)

    def to_wire(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"replay": self.replay} if self.replay else {}
        return {
            **extra,
            "expires": self.expires,
            "v": VERSION,
            "kind": "event",
            "id": self.id,
            "topic": self.topic,
            "payload": self.payload,
            "service": self.service,
            "publisher": self.publisher,
            "attempt": self.attempt,
            "handlers": self.handlers,
            "sent_at": self.sent_at,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Event:
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ProtocolError("event is not a version 1 object")
        try:
            handlers = _typed(data, "handlers", (list, type(None)))
            if handlers is not None and not all(isinstance(h, str) for h in handlers):
                raise TypeError("field 'handlers' has the wrong type")
            return cls(
                topic=_typed(data, "topic", str),
                payload=data["payload"],
                service=_typed(data, "service", str),
                id=_typed(data, "id", str),
                publisher=str(data.get("publisher", "")),
                attempt=_typed(data, "attempt", int),
                handlers=handlers,
                sent_at=int(data.get("sent_at") or 0),
                expires=int(data.get("expires") or 0),
                replay=str(data.get("replay") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed event: {exc}") from exc


def decode_message(data: Any) -> Request | Event:
    """A queued message: an event (``kind: "event"``) or a request."""
    if isinstance(data, dict) and data.get("kind") == "event":
        return Event.from_wire(data)
    return Request.from_wire(data)


def _typed(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"field {name!r} has the wrong type")
    return value


def reply_ok(call_id: str, result: Any, **meta: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": call_id, "ok": True, "result": result, **meta}


def reply_error(call_id: str, error: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": call_id, "ok": False, "error": error, **meta}
