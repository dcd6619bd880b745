"""Wire codec: round-trips for every registered type, strict and total decoding."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Annotated

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import CodecError, InternalError
from tests import strategies


class Colour(enum.IntEnum):
    RED = 1
    BLUE = 2


@wire.struct
@dataclass(frozen=True, slots=True)
class Point:
    x: wire.I64
    y: wire.I64


@wire.message(type_id=200)
@dataclass(frozen=True, slots=True)
class Kitchen:
    """A test-only type using every kind of field the schema supports."""

    count: wire.U32
    flag: bool
    blob: wire.Bytes32
    name: Annotated[str, wire.MaxLen(16)]
    colour: Colour
    maybe: wire.U8 | None
    points: Annotated[tuple[Point, ...], wire.MaxLen(3)]
    pair: tuple[int, bytes]


ALL_TYPES = sorted(wire.registered_types().items())


@pytest.mark.parametrize(("type_id", "info"), ALL_TYPES, ids=[i.cls.__name__ for _, i in ALL_TYPES])
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_registered_type(type_id: int, info: wire.MessageInfo, data: st.DataObject) -> None:
    msg = data.draw(strategies.for_type(info.cls))
    encoded = wire.encode(msg)
    assert wire.decode(encoded) == msg
    assert wire.peek_type_id(encoded) == type_id
    assert wire.encode(wire.decode(encoded)) == encoded


def test_registry_includes_test_type_and_envelope() -> None:
    ids = dict(ALL_TYPES)
    assert ids[1].cls is wire.Envelope
    assert ids[200].cls is Kitchen


@settings(max_examples=2000)
@given(st.binary(max_size=256))
def test_fuzzed_bytes_only_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        wire.decode(data)


_SAMPLE = Kitchen(7, True, b"\x01" * 32, "hi", Colour.BLUE, None, (Point(-1, 2),), (3, b"x"))


@settings(max_examples=2000)
@given(st.data())
def test_mutated_valid_messages_only_raise_codec_error(data: st.DataObject) -> None:
    encoded = bytearray(wire.encode(_SAMPLE))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        msg = wire.decode(bytes(encoded[:cut]))
    except CodecError:
        return
    assert isinstance(msg, Kitchen)  # a mutation may still land on a valid message
    assert wire.encode(msg) == bytes(encoded[:cut])  # ...and then it is the canonical one


def _raw(*fields: object) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)  # type: ignore[no-any-return]


def _kitchen_fields() -> list[object]:
    return [7, True, b"\x01" * 32, "hi", 2, None, [[-1, 2]], [3, b"x"]]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f.__setitem__(0, True), "bool where int is expected"),
        (lambda f: f.__setitem__(1, 1), "int where bool is expected"),
        (lambda f: f.__setitem__(2, b"\x01" * 31), "wrong fixed length"),
        (lambda f: f.__setitem__(3, "x" * 17), "string over MaxLen"),
        (lambda f: f.__setitem__(4, 9), "unknown enum value"),
        (lambda f: f.__setitem__(5, 256), "int over its range"),
        (lambda f: f.__setitem__(0, -1), "negative unsigned"),
        (lambda f: f.__setitem__(6, [[1, 2]] * 4), "tuple over MaxLen"),
        (lambda f: f.__setitem__(7, [3]), "fixed tuple of wrong arity"),
        (lambda f: f.append(1), "extra field"),
        (lambda f: f.pop(), "missing field"),
        (lambda f: f.__setitem__(3, b"hi"), "bytes where str is expected"),
    ],
)
def test_wrong_field_types_raise_codec_error(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    fields = _kitchen_fields()
    assert wire.decode(_raw(1, 200, *fields)) == _SAMPLE
    mutate(fields)
    with pytest.raises(CodecError):
        wire.decode(_raw(1, 200, *fields))


def test_unknown_type_version_and_shapes() -> None:
    with pytest.raises(CodecError, match="unknown message type"):
        wire.decode(_raw(1, 65000, 1))
    with pytest.raises(CodecError, match="version"):
        wire.decode(_raw(2, 200, *_kitchen_fields()))
    with pytest.raises(CodecError):
        wire.decode(msgpack.packb({"a": 1}))
    with pytest.raises(CodecError):
        wire.decode(b"")
    with pytest.raises(CodecError):
        wire.decode(wire.encode(_SAMPLE) + b"\x00")  # trailing bytes


def test_non_canonical_encoding_is_rejected() -> None:
    canonical = wire.encode(_SAMPLE)
    # 7 as a uint32 (ce 00 00 00 07) instead of a positive fixint (07).
    stretched = canonical.replace(b"\x07", b"\xce\x00\x00\x00\x07", 1)
    assert msgpack.unpackb(stretched) == msgpack.unpackb(canonical)
    with pytest.raises(CodecError, match="non-canonical"):
        wire.decode(stretched)


@pytest.mark.parametrize(
    ("canonical", "stretched", "what"),
    [
        (b"\xa2hi", b"\xd9\x02hi", "str 8 for a fixstr"),
        (b"\xc4\x01x", b"\xc5\x00\x01x", "bin 16 for a bin 8"),
        (b"\x91\x92\xff\x02", b"\xdc\x00\x01\x92\xff\x02", "array 16 for a fixarray"),
        (b"\xff\x02", b"\xd0\xff\x02", "int 8 for a negative fixint"),
        (b"\xc0", b"\xc0", "nothing: the canonical bytes themselves"),
    ],
)
def test_every_longer_form_of_a_value_is_non_canonical(canonical: bytes, stretched: bytes, what: str) -> None:
    good = wire.encode(_SAMPLE)
    assert canonical in good, what
    variant = good.replace(canonical, stretched, 1)
    assert msgpack.unpackb(variant) == msgpack.unpackb(good)
    if variant == good:
        assert wire.decode(variant) == _SAMPLE
        return
    with pytest.raises(CodecError, match="non-canonical"):
        wire.decode(variant)


@pytest.mark.parametrize("value", [7.0, msgpack.ExtType(1, b"x")], ids=["float", "ext"])
def test_values_the_schema_never_encodes_do_not_decode(value: object) -> None:
    fields = _kitchen_fields()
    fields[0] = value
    with pytest.raises(CodecError):
        wire.decode(_raw(1, 200, *fields))


def test_size_cap() -> None:
    encoded = wire.encode(_SAMPLE)
    with pytest.raises(CodecError, match="exceeds cap"):
        wire.decode(encoded, max_size=len(encoded) - 1)
    assert wire.decode(encoded, max_size=len(encoded)) == _SAMPLE


def test_decode_as_checks_type() -> None:
    encoded = wire.encode(_SAMPLE)
    assert wire.decode_as(encoded, Kitchen) == _SAMPLE
    with pytest.raises(CodecError, match="expected Envelope"):
        wire.decode_as(encoded, wire.Envelope)


def test_duplicate_type_id_fails_at_registration() -> None:
    with pytest.raises(InternalError, match="duplicate wire type id 200"):

        @wire.message(type_id=200)
        @dataclass(frozen=True, slots=True)
        class Clash:
            a: int


def test_unfrozen_or_unslotted_types_are_refused() -> None:
    with pytest.raises(InternalError, match="frozen"):

        @wire.message(type_id=254)
        @dataclass(slots=True)
        class Mutable:
            a: int

    with pytest.raises(InternalError, match="frozen"):

        @wire.message(type_id=254)
        @dataclass(frozen=True)
        class NoSlots:
            a: int


def test_encoding_a_bad_value_is_an_internal_error() -> None:
    with pytest.raises(InternalError):
        wire.encode(Point(1, 2))  # a struct, not a registered message
    with pytest.raises(InternalError):
        wire.encode(Kitchen(1 << 70, True, b"", "", Colour.RED, None, (), (0, b"")))
