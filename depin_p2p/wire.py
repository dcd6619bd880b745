"""Wire format: msgpack arrays, a registry of message types, signed envelopes. [pure]

Every message on the wire is the canonical msgpack encoding of
``[WIRE_VERSION, type_id, field, ...]``. Message types are frozen, slotted
dataclasses registered with :func:`message` under an explicit type id; a
duplicate id fails at import. Field types are read from the annotations and
checked strictly on decode: ``int`` (never ``bool``), ``bool``, ``bytes``,
``str``, ``X | None``, ``tuple[X, ...]``, fixed tuples, ``IntEnum``s,
``NewType``s of those, nested :func:`struct` dataclasses (encoded as a bare
array), and ``Annotated[..., Len(n) | MaxLen(n) | Range(lo, hi)]`` bounds.

Decoding accepts only canonical bytes (re-encoding must give the input back),
so one message has exactly one encoding and hashes of bytes are stable ids.

A signature covers ``len‖network_id ‖ len‖domain ‖ type_id ‖ len‖body`` (see
:func:`signing_bytes`): a message signed for another network or another
domain never verifies.

Type id ranges, so subsystems never collide:
  1-15 foundation · 16-31 ledger · 32-63 witness · 64-79 gossip ·
  80-111 consensus · 112-127 node/api · 200-255 tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import struct as _struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from depin_p2p.errors import CodecError, InternalError, Reject

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: libp2p silently drops larger gossip messages anyway
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
UINT64_MAX = (1 << 64) - 1
INT64_MIN = -(1 << 63)


class Domain(enum.StrEnum):
    """What a signature is for. Part of the signed bytes."""

    BEACON = "beacon"
    WITNESS = "witness"
    COMPUTE_CHALLENGE = "compute_challenge"
    COMPUTE_RESPONSE = "compute_response"
    COMPUTE_ATTESTATION = "compute_attestation"
    TX = "tx"
    PROPOSAL = "proposal"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


# --------------------------------------------------------------------------
# Field bounds usable inside Annotated[...]


@dataclass(frozen=True, slots=True)
class Len:
    """Exact length of a bytes/str/tuple field."""

    n: int


@dataclass(frozen=True, slots=True)
class MaxLen:
    """Maximum length of a bytes/str/tuple field."""

    n: int


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds of an int field."""

    lo: int
    hi: int


U8 = Annotated[int, Range(0, 0xFF)]
U16 = Annotated[int, Range(0, 0xFFFF)]
U32 = Annotated[int, Range(0, 0xFFFF_FFFF)]
U64 = Annotated[int, Range(0, UINT64_MAX)]
I64 = Annotated[int, Range(INT64_MIN, (1 << 63) - 1)]
Bytes32 = Annotated[bytes, Len(32)]
Bytes64 = Annotated[bytes, Len(64)]
PublicKeyBytes = Annotated[bytes, Len(PUBLIC_KEY_BYTES)]
SignatureBytes = Annotated[bytes, Len(SIGNATURE_BYTES)]
ShortStr = Annotated[str, MaxLen(128)]

DEFAULT_MAX_LEN = MAX_MESSAGE_BYTES


# --------------------------------------------------------------------------
# Schema nodes: one per field type, each knows how to check a decoded value.


class Node(Protocol):
    def to_raw(self, value: Any) -> Any: ...
    def from_raw(self, raw: Any, path: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class IntNode:
    lo: int = INT64_MIN
    hi: int = UINT64_MAX

    def to_raw(self, value: Any) -> Any:
        return value

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not int:
            raise CodecError(f"{path}: expected int, got {type(raw).__name__}")
        if not self.lo <= raw <= self.hi:
            raise CodecError(f"{path}: {raw} outside [{self.lo}, {self.hi}]")
        return raw


@dataclass(frozen=True, slots=True)
class BoolNode:
    def to_raw(self, value: Any) -> Any:
        return value

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not bool:
            raise CodecError(f"{path}: expected bool, got {type(raw).__name__}")
        return raw


@dataclass(frozen=True, slots=True)
class BytesNode:
    min_len: int = 0
    max_len: int = DEFAULT_MAX_LEN

    def to_raw(self, value: Any) -> Any:
        return value

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not bytes:
            raise CodecError(f"{path}: expected bytes, got {type(raw).__name__}")
        if not self.min_len <= len(raw) <= self.max_len:
            raise CodecError(f"{path}: length {len(raw)} outside [{self.min_len}, {self.max_len}]")
        return raw


@dataclass(frozen=True, slots=True)
class StrNode:
    min_len: int = 0
    max_len: int = DEFAULT_MAX_LEN

    def to_raw(self, value: Any) -> Any:
        return value

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not str:
            raise CodecError(f"{path}: expected str, got {type(raw).__name__}")
        if not self.min_len <= len(raw) <= self.max_len:
            raise CodecError(f"{path}: length {len(raw)} outside [{self.min_len}, {self.max_len}]")
        return raw


@dataclass(frozen=True, slots=True)
class EnumNode:
    enum_type: type[enum.IntEnum]

    def to_raw(self, value: Any) -> Any:
        return int(value)

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not int:
            raise CodecError(f"{path}: expected int enum, got {type(raw).__name__}")
        try:
            return self.enum_type(raw)
        except ValueError:
            raise CodecError(f"{path}: {raw} is not a {self.enum_type.__name__}") from None


@dataclass(frozen=True, slots=True)
class OptionalNode:
    inner: Node

    def to_raw(self, value: Any) -> Any:
        return None if value is None else self.inner.to_raw(value)

    def from_raw(self, raw: Any, path: str) -> Any:
        return None if raw is None else self.inner.from_raw(raw, path)


@dataclass(frozen=True, slots=True)
class TupleNode:
    """Homogeneous ``tuple[X, ...]``."""

    item: Node
    min_len: int = 0
    max_len: int = DEFAULT_MAX_LEN

    def to_raw(self, value: Any) -> Any:
        return [self.item.to_raw(v) for v in value]

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not tuple:
            raise CodecError(f"{path}: expected array, got {type(raw).__name__}")
        if not self.min_len <= len(raw) <= self.max_len:
            raise CodecError(f"{path}: length {len(raw)} outside [{self.min_len}, {self.max_len}]")
        return tuple(self.item.from_raw(v, f"{path}[{i}]") for i, v in enumerate(raw))


@dataclass(frozen=True, slots=True)
class FixedTupleNode:
    """Heterogeneous ``tuple[X, Y, Z]``."""

    items: tuple[Node, ...]

    def to_raw(self, value: Any) -> Any:
        return [n.to_raw(v) for n, v in zip(self.items, value, strict=True)]

    def from_raw(self, raw: Any, path: str) -> Any:
        if type(raw) is not tuple or len(raw) != len(self.items):
            raise CodecError(f"{path}: expected array of {len(self.items)}")
        pairs = enumerate(zip(self.items, raw, strict=True))
        return tuple(n.from_raw(v, f"{path}[{i}]") for i, (n, v) in pairs)


@dataclass(frozen=True, slots=True)
class StructNode:
    """A nested dataclass, encoded as a bare array of its fields."""

    cls: type

    def to_raw(self, value: Any) -> Any:
        if type(value) is not self.cls:
            raise InternalError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return _schema(self.cls).to_raw_fields(value)

    def from_raw(self, raw: Any, path: str) -> Any:
        return _schema(self.cls).from_raw_fields(raw, path)


# --------------------------------------------------------------------------
# Schemas and the registry


@dataclass(frozen=True, slots=True)
class Schema:
    cls: type
    names: tuple[str, ...]
    nodes: tuple[Node, ...]

    def to_raw_fields(self, value: Any) -> list[Any]:
        return [n.to_raw(getattr(value, name)) for name, n in zip(self.names, self.nodes, strict=True)]

    def from_raw_fields(self, raw: Any, path: str) -> Any:
        if type(raw) is not tuple:
            raise CodecError(f"{path}: expected array for {self.cls.__name__}")
        if len(raw) != len(self.nodes):
            raise CodecError(
                f"{path}: {self.cls.__name__} has {len(self.nodes)} fields, got {len(raw)}"
            )
        values = [
            n.from_raw(r, f"{path}.{name}") for name, n, r in zip(self.names, self.nodes, raw, strict=True)
        ]
        return self.cls(*values)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    cls: type
    type_id: int
    domain: Domain | None


_BY_ID: dict[int, MessageInfo] = {}
_BY_CLS: dict[type, MessageInfo] = {}
_SCHEMAS: dict[type, Schema] = {}
_STRUCTS: set[type] = set()

T = TypeVar("T")
M = TypeVar("M")


def _check_dataclass(cls: type) -> None:
    if not dataclasses.is_dataclass(cls):
        raise InternalError(f"{cls.__name__} must be a dataclass")
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not params.frozen or "__slots__" not in cls.__dict__:
        raise InternalError(f"{cls.__name__} must be @dataclass(frozen=True, slots=True)")


def message(*, type_id: int, domain: Domain | None = None) -> Callable[[type[T]], type[T]]:
    """Register a frozen, slotted dataclass as a wire message with ``type_id``.

    ``domain`` is set for types that travel signed; it is part of the signed
    bytes. Raises InternalError at import on a duplicate id or a bad class.
    """

    def register(cls: type[T]) -> type[T]:
        _check_dataclass(cls)
        if not 1 <= type_id <= 0xFFFF:
            raise InternalError(f"type id {type_id} of {cls.__name__} out of range")
        if type_id in _BY_ID:
            raise InternalError(
                f"duplicate wire type id {type_id}: {cls.__name__} and {_BY_ID[type_id].cls.__name__}"
            )
        info = MessageInfo(cls, type_id, domain)
        _BY_ID[type_id] = info
        _BY_CLS[cls] = info
        return cls

    return register


def struct(cls: type[T]) -> type[T]:
    """Mark a frozen, slotted dataclass usable as a nested field (no type id)."""
    _check_dataclass(cls)
    _STRUCTS.add(cls)
    return cls


def _node_for(tp: Any, owner: type) -> Node:
    bounds: list[object] = []
    if typing.get_origin(tp) is Annotated:
        tp, *bounds = typing.get_args(tp)
    while hasattr(tp, "__supertype__"):  # NewType
        tp = tp.__supertype__
        if typing.get_origin(tp) is Annotated:
            tp, *more = typing.get_args(tp)
            bounds.extend(more)
    lo_len, hi_len = 0, DEFAULT_MAX_LEN
    lo_int, hi_int = INT64_MIN, UINT64_MAX
    for b in bounds:
        if isinstance(b, Len):
            lo_len = hi_len = b.n
        elif isinstance(b, MaxLen):
            hi_len = b.n
        elif isinstance(b, Range):
            lo_int, hi_int = b.lo, b.hi
    origin = typing.get_origin(tp)
    if tp is bool:
        return BoolNode()
    if tp is int:
        return IntNode(lo_int, hi_int)
    if tp is bytes:
        return BytesNode(lo_len, hi_len)
    if tp is str:
        return StrNode(lo_len, hi_len)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return EnumNode(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1 or len(typing.get_args(tp)) != 2:
            raise InternalError(f"{owner.__name__}: only `X | None` unions are supported")
        return OptionalNode(_node_for(members[0], owner))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return TupleNode(_node_for(args[0], owner), lo_len, hi_len)
        return FixedTupleNode(tuple(_node_for(a, owner) for a in args))
    if isinstance(tp, type) and (tp in _STRUCTS or tp in _BY_CLS):
        return StructNode(tp)
    raise InternalError(f"{owner.__name__}: unsupported wire field type {tp!r}")


def _schema(cls: type) -> Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
        schema = Schema(
            cls,
            tuple(f.name for f in fields),
            tuple(_node_for(hints[f.name], cls) for f in fields),
        )
        _SCHEMAS[cls] = schema
    return schema


def schema_of(cls: type) -> Schema:
    """The compiled field schema of a registered message or struct type."""
    if cls not in _BY_CLS and cls not in _STRUCTS:
        raise InternalError(f"{cls.__name__} is not a registered wire type")
    return _schema(cls)


def registered_types() -> dict[int, MessageInfo]:
    """All registered message types by id (compiles every schema, so bad types fail here)."""
    for info in _BY_ID.values():
        _schema(info.cls)
    return dict(_BY_ID)


def info_of(cls: type) -> MessageInfo:
    try:
        return _BY_CLS[cls]
    except KeyError:
        raise InternalError(f"{cls.__name__} is not a registered message type") from None


# --------------------------------------------------------------------------
# Encode / decode


def _pack(raw: Any) -> bytes:
    try:
        return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]
    except (OverflowError, TypeError, ValueError) as exc:
        raise InternalError(f"cannot encode {raw!r:.200}: {exc}") from exc


def encode(msg: object) -> bytes:
    """Canonical bytes of a registered message. Raises InternalError on a bad value."""
    info = info_of(type(msg))
    raw = [WIRE_VERSION, info.type_id, *_schema(info.cls).to_raw_fields(msg)]
    return _pack(raw)


def _unpack(data: bytes, max_size: int) -> tuple[Any, ...]:
    if type(data) is not bytes:
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise CodecError(f"message of {len(data)} bytes exceeds cap of {max_size}")
    try:
        raw = msgpack.unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_map_len=0,
            max_ext_len=0,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise CodecError(f"malformed msgpack: {exc}") from None
    if type(raw) is not tuple or len(raw) < 2:
        raise CodecError("not a [version, type_id, ...] array")
    return raw


def _header(raw: tuple[Any, ...]) -> MessageInfo:
    version, type_id = raw[0], raw[1]
    if type(version) is not int or version != WIRE_VERSION:
        raise CodecError(f"unsupported wire version {version!r}")
    if type(type_id) is not int or type_id not in _BY_ID:
        raise CodecError(f"unknown message type {type_id!r}")
    return _BY_ID[type_id]


def peek_type_id(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> int:
    """The type id of encoded bytes, checking only the header."""
    return _header(_unpack(data, max_size)).type_id


class _DecodeMemo:
    """Bytes that decoded, and what they decoded to (messages are frozen, so sharing is safe)."""

    __slots__ = ("capacity", "hits", "items", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: dict[bytes, object] = {}
        self.hits = 0
        self.misses = 0


_DECODE_MEMO: _DecodeMemo | None = None


def memoize_decoding(capacity: int | None) -> None:
    """Process-wide: remember up to ``capacity`` decoded messages by their bytes (None: off, the default).

    For the simulator, where every node of one process decodes the same bytes:
    decoding is a pure function of the bytes and messages are immutable, so a
    hit returns the very object a fresh decode would equal. Only successful
    decodes are kept; the size cap is still checked on every call.
    """
    global _DECODE_MEMO  # noqa: PLW0603
    _DECODE_MEMO = None if capacity is None else _DecodeMemo(capacity)


def decode(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> object:
    """Decode canonical bytes into a registered message.

    Raises CodecError for anything malformed, oversized, non-canonical, of an
    unknown type or version, or with wrong field types or counts.
    """
    memo = _DECODE_MEMO
    if memo is None or type(data) is not bytes or len(data) > max_size:
        return _decode(data, max_size)
    hit = memo.items.get(data)
    if hit is not None:
        memo.hits += 1
        return hit
    memo.misses += 1
    msg = _decode(data, max_size)
    items = memo.items
    items[data] = msg
    if len(items) > memo.capacity:
        del items[next(iter(items))]
    return msg


def _decode(data: bytes, max_size: int) -> object:
    raw = _unpack(data, max_size)
    info = _header(raw)
    # Canonical form, checked on the unpacked values rather than by encoding the message again:
    # a field's wire value is exactly what its node's to_raw gives back (ints for enums, bytes,
    # str, bool, None, arrays), so packing them is encode(msg), in C, without building the
    # message first. Anything the schema refuses fails below either way.
    try:
        canonical = msgpack.packb(raw, use_bin_type=True) == data
    except (OverflowError, TypeError, ValueError):
        canonical = False
    if not canonical:
        raise CodecError(f"non-canonical encoding of {info.cls.__name__}")
    try:
        msg = _schema(info.cls).from_raw_fields(raw[2:], info.cls.__name__)
    except RecursionError:
        raise CodecError("message nested too deeply") from None
    return msg


def decode_as(data: bytes, cls: type[M], max_size: int = MAX_MESSAGE_BYTES) -> M:
    """Decode and require a specific message type (CodecError otherwise)."""
    msg = decode(data, max_size)
    if type(msg) is not cls:
        raise CodecError(f"expected {cls.__name__}, got {type(msg).__name__}")
    return msg


def content_id(data: bytes) -> bytes:
    """Content address of encoded bytes: BLAKE2b-256."""
    return hashlib.blake2b(data, digest_size=32).digest()


# --------------------------------------------------------------------------
# Signatures


def _lp(part: bytes) -> bytes:
    return _struct.pack(">I", len(part)) + part


def signing_bytes(network_id: str, domain: Domain, type_id: int, body: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers.

    ``u32 len ‖ network_id ‖ u32 len ‖ domain ‖ u16 type_id ‖ u32 len ‖ body``,
    lengths big-endian, strings UTF-8.
    """
    return b"".join(
        (
            _lp(network_id.encode()),
            _lp(domain.value.encode()),
            _struct.pack(">H", type_id),
            _lp(body),
        )
    )


class Signer(Protocol):
    """Anything that can sign: :class:`depin_p2p.crypto.KeyPair` in practice."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


@message(type_id=1)
@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed message. ``body`` is the canonical encoding of the inner message."""

    network_id: ShortStr
    signer: PublicKeyBytes
    signature: SignatureBytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope whose signature checked out, with its decoded message."""

    message: object
    signer: bytes
    envelope: Envelope


def seal(msg: object, signer: Signer, network_id: str) -> Envelope:
    """Sign ``msg`` for ``network_id`` in the domain of its type."""
    info = info_of(type(msg))
    if info.domain is None:
        raise InternalError(f"{info.cls.__name__} has no signing domain")
    body = encode(msg)
    sig = signer.sign(signing_bytes(network_id, info.domain, info.type_id, body))
    return Envelope(network_id, signer.public_key, sig, body)


_VERIFY_KEYS: dict[bytes, VerifyKey] = {}
_VERIFY_KEYS_CAP = 4096


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise ``Reject('bad_signature')`` unless ``signature`` is valid for ``data``."""
    vk = _VERIFY_KEYS.get(public_key)
    if vk is None:
        try:
            vk = VerifyKey(public_key)
        except (ValueError, TypeError) as exc:  # nacl raises ValueError for wrong sizes
            raise Reject("bad_public_key", str(exc)) from None
        if len(_VERIFY_KEYS) >= _VERIFY_KEYS_CAP:
            _VERIFY_KEYS.clear()
        _VERIFY_KEYS[public_key] = vk
    try:
        vk.verify(data, signature)
    except BadSignatureError:
        raise Reject("bad_signature") from None


Verifier = Callable[[bytes, bytes, bytes], None]
"""``verify(public_key, signed_bytes, signature)``; raises ``Reject('bad_signature')``."""

VERIFIED_CAPACITY = 65_536  # distinct signatures a node remembers as verified (~5 MB)


@dataclass(slots=True)
class SignatureTally:
    """One checker's share of a :class:`SignatureCache`'s work (exported as metrics).

    Attributes:
        verified: Ed25519 checks this checker caused (failed ones included).
        cached: its checks answered from memory.
    """

    verified: int = 0
    cached: int = 0


class SignatureCache:
    """One Ed25519 check per distinct signature on a node: a bounded memory of those that checked out.

    A node has one, shared by everything that verifies (gossip, the proof
    pool, the value check, consensus), so a proof relayed, pooled, proposed
    and re-checked costs one verification; what the node signs itself is
    entered with :meth:`mark` and never verified. The key (the envelope's
    id here) is a hash of the public key, the signature and the exact
    signed bytes: a good signature moved onto other bytes is checked again,
    and fails. Failures are not remembered. The oldest entry goes first
    when full (insertion order: a hit does not make an entry younger, so a
    flood of new signatures evicts in a fixed order, at one check each).

    Attributes:
        check: the check run on a miss (:func:`verify_signature`, Ed25519).
        verified: checks run (failed ones included), all checkers together.
        cached: checks answered from memory, all checkers together.
        marked: signatures entered as good without a check (our own).

    Bounded twice: ``capacity`` entries, and an entry is forgotten
    ``keep_commits`` commits after it was entered (:meth:`on_commit`; a
    signature of an old epoch is rarely seen again), so the memory levels off
    at the traffic of a few epochs, not at the cap after hours.

    Safe across threads without a lock (this module is pure): the value check
    enters signatures from a worker thread while the event loop enters
    gossip's, so eviction tolerates the other thread's changes (an entry it
    already removed, the dict changing size under an iterator). The counts
    may then miss an increment; they are diagnostics, never decisions.
    """

    __slots__ = ("_capacity", "_commits", "_keep", "_seen", "cached", "check", "marked", "verified")

    def __init__(
        self, check: Verifier | None = None, capacity: int = VERIFIED_CAPACITY, keep_commits: int = 8
    ) -> None:
        if capacity < 1:
            raise InternalError("a signature cache holds at least one entry")
        self.check: Verifier = check if check is not None else verify_signature
        self._capacity = capacity
        self._keep = keep_commits
        self._commits = 0
        self._seen: dict[bytes, int] = {}  # key -> commits counted when it was entered
        self.verified = 0
        self.cached = 0
        self.marked = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    @staticmethod
    def key(public_key: bytes, data: bytes, signature: bytes) -> bytes:
        """The id an entry is kept under: BLAKE2b-256 of public key, signature and signed bytes."""
        h = hashlib.blake2b(public_key, digest_size=32)
        h.update(signature)
        h.update(data)
        return h.digest()

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> None:
        """A :data:`Verifier`: returns if the signature is good, else raises ``Reject``."""
        self._verify(public_key, data, signature, None)

    def verifier(self, tally: SignatureTally) -> Verifier:
        """A :data:`Verifier` through this cache that also counts into ``tally`` (one checker's share)."""

        def verify(public_key: bytes, data: bytes, signature: bytes) -> None:
            self._verify(public_key, data, signature, tally)

        return verify

    def _verify(self, public_key: bytes, data: bytes, signature: bytes, tally: SignatureTally | None) -> None:
        key = self.key(public_key, data, signature)
        if key in self._seen:
            self.cached += 1
            if tally is not None:
                tally.cached += 1
            return
        self.verified += 1
        if tally is not None:
            tally.verified += 1
        self.check(public_key, data, signature)
        self._remember(key)

    def unchecked(self, public_key: bytes, data: bytes, signature: bytes) -> bytes | None:
        """The key a batch check of this signature would enter (:meth:`enter_checked`); None if remembered."""
        key = self.key(public_key, data, signature)
        return None if key in self._seen else key

    def enter_checked(self, key: bytes, good: bool, tally: SignatureTally | None = None) -> None:
        """Count one check run elsewhere (a worker thread); remember ``key`` if it was ``good``.

        Failures are not remembered: the inline check of the same signature runs it again, and
        raises there.
        """
        self.verified += 1
        if tally is not None:
            tally.verified += 1
        if good:
            self._remember(key)

    def mark(self, public_key: bytes, data: bytes, signature: bytes) -> None:
        """Remember a signature known good without checking it (one we made)."""
        self.marked += 1
        self._remember(self.key(public_key, data, signature))

    def mark_envelope(self, env: Envelope) -> None:
        """:meth:`mark` for an envelope we sealed (its signed bytes rebuilt from its body)."""
        info = info_of(type(decode(env.body)))
        if info.domain is None:
            raise InternalError(f"{info.cls.__name__} has no signing domain")
        signed = signing_bytes(env.network_id, info.domain, info.type_id, env.body)
        self.mark(env.signer, signed, env.signature)

    def _remember(self, key: bytes) -> None:
        """Enter ``key``, evicting the oldest entries while over capacity."""
        seen = self._seen
        seen[key] = self._commits
        for _ in range(8):  # another thread may spoil an attempt; it trims as well
            if len(seen) <= self._capacity:
                return
            with contextlib.suppress(RuntimeError, StopIteration):  # changed under the iterator
                seen.pop(next(iter(seen)), None)

    def on_commit(self) -> None:
        """An epoch committed: forget what was entered ``keep_commits`` commits ago or earlier."""
        self._commits += 1
        horizon, seen = self._commits - self._keep, self._seen
        while seen:
            try:
                oldest = next(iter(seen))
            except (RuntimeError, StopIteration):  # another thread changed the dict: look again
                continue
            entered = seen.get(oldest)
            if entered is not None and entered >= horizon:
                break
            seen.pop(oldest, None)


def open_envelope(
    env: Envelope,
    *,
    network_id: str,
    domain: Domain,
    signer: bytes | None = None,
    max_size: int = MAX_MESSAGE_BYTES,
    verify: Verifier | None = None,
) -> Verified:
    """Check an envelope and return its message.

    Raises ``Reject`` with code ``wrong_network`` (another network's
    envelope), ``malformed`` (body does not decode), ``wrong_domain`` (the
    body's type is not signed in ``domain``), ``wrong_signer`` (not the
    expected key), ``bad_signature`` (tampered body, or signed for another
    network or domain than claimed).
    """
    if env.network_id != network_id:
        raise Reject("wrong_network", f"envelope for {env.network_id!r}, expected {network_id!r}")
    try:
        msg = decode(env.body, max_size)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    info = _BY_CLS[type(msg)]
    if info.domain is not domain:
        raise Reject("wrong_domain", f"{info.cls.__name__} is not signed as {domain.value}")
    if signer is not None and env.signer != signer:
        raise Reject("wrong_signer", "signed by another key than the expected one")
    (verify or verify_signature)(
        env.signer, signing_bytes(network_id, domain, info.type_id, env.body), env.signature
    )
    return Verified(msg, env.signer, env)
