"""Frames, signing, codecs and envelopes (layer 0, no Redis)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from rpcapp.errors import PayloadTooLarge, ProtocolError
from rpcapp.protocol import CODEC_MSGPACK, HEADER_LEN, Request, Signer, derive_key


@pytest.fixture
def signer() -> Signer:
    return Signer((derive_key("secret"),))


def test_round_trip_json(signer):
    frame = signer.pack({"a": [1, 2.5, "x", None, True]})
    assert frame[0] == 1 and frame[1:2] == b"j"
    assert signer.unpack(frame) == {"a": [1, 2.5, "x", None, True]}


def test_round_trip_msgpack():
    signer = Signer((derive_key("secret"),), CODEC_MSGPACK)
    frame = signer.pack({"a": [1, "x"]})
    assert frame[1:2] == b"m"
    assert signer.unpack(frame) == {"a": [1, "x"]}


def test_rich_values_encode_as_strings(signer):
    value = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, 2),
        "id": uuid.UUID(int=1),
        "amount": decimal.Decimal("1.10"),
    }
    out = signer.unpack(signer.pack(value))
    assert out == {
        "when": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "id": "00000000-0000-0000-0000-000000000001",
        "amount": "1.10",
    }


def test_unserialisable_value_raises_type_error(signer):
    with pytest.raises(TypeError):
        signer.pack({"x": object()})


def test_tampered_body_is_rejected(signer):
    frame = bytearray(signer.pack({"procedure": "a.b"}))
    frame[-3] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        signer.unpack(bytes(frame))


def test_other_key_is_rejected(signer):
    forged = Signer((derive_key("attacker"),)).pack({"x": 1})
    with pytest.raises(ProtocolError, match="signature"):
        signer.unpack(forged)


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"hello world", b"\x02j" + b"0" * 40, bytes(range(256))])
def test_garbage_is_a_protocol_error(signer, garbage):
    with pytest.raises(ProtocolError):
        signer.unpack(garbage)


def test_old_key_still_accepted_for_rotation():
    old = Signer((derive_key("old"),))
    rotated = Signer((derive_key("new"), derive_key("old")))
    assert rotated.unpack(old.pack({"x": 1})) == {"x": 1}
    assert Signer((derive_key("new"),)).unpack(rotated.pack({"x": 2})) == {"x": 2}


def test_size_limits_both_ways(signer):
    with pytest.raises(PayloadTooLarge):
        signer.pack({"x": "a" * 100}, limit=50)
    frame = signer.pack({"x": "a" * 100})
    with pytest.raises(PayloadTooLarge):
        signer.unpack(frame, limit=len(frame) - 1)
    assert signer.unpack(frame, limit=len(frame)) == {"x": "a" * 100}
    assert len(signer.pack({})) == HEADER_LEN + 2


def test_request_envelope_round_trip():
    req = Request("calculator.add", [1, 2], {}, deadline=123, reply_to="ns:reply:{c}", caller="h:1")
    wire = req.to_wire()
    assert wire["v"] == 1 and wire["trace_id"] == req.id
    back = Request.from_wire(wire)
    assert (back.procedure, back.args, back.deadline, back.reply_to, back.id) == ("calculator.add", [1, 2], 123, "ns:reply:{c}", req.id)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.pop("procedure"),
        lambda w: w.update(args="notalist"),
        lambda w: w.update(deadline="soon"),
        lambda w: w.update(deadline=True),
        lambda w: w.update(v=99),
        lambda w: w.update(kwargs=[1]),
    ],
)
def test_malformed_envelopes_are_protocol_errors(mutate):
    wire = Request("a.b", [], {}, deadline=1, reply_to=None).to_wire()
    mutate(wire)
    with pytest.raises(ProtocolError):
        Request.from_wire(wire)


def test_envelope_must_be_an_object():
    with pytest.raises(ProtocolError):
        Request.from_wire([1, 2])
