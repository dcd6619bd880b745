"""Compute challenges: a matrix product checked with Freivalds' algorithm. [pure]

An assigned witness sends a provider a :class:`Challenge` with a 32-byte
seed. Both derive two n x n integer matrices A, B mod the prime
:data:`MODULUS` from the seed; the provider returns C = A·B mod p in a
:class:`Response` before the deadline; the witness checks it with k rounds
of Freivalds' check in O(k·n²) and signs an :class:`Attestation`.

Spec, so another implementation can reproduce every number:

* entry i (row-major) of matrix M in {A: tag 0x41, B: tag 0x42} is
  ``u32_le(word i mod 16 of BLAKE2b-512(tag ‖ seed ‖ u64_be(i // 16))) mod p``;
* Freivalds vectors: the k columns of R (n x k), entry i (row-major) built
  the same way with tag 0x52 from the witness's private ``r_seed``;
* the response passes iff ``C·R mod p == A·((B·R) mod p) mod p``.

Capacity and pay: a provider's registered ``capacity`` is the matrix side
it claims to multiply before the deadline. Its witnesses challenge it at
``n = challenge_size(capacity)`` (capacity clamped to [8, 256]); consensus
rejects an attestation at any other ``n`` [wrong_size], and rewards weigh a
claim by :func:`work_units` of that verified ``n`` (n³ multiply-adds), never
by the raw declared number. Declaring more than 256 buys nothing; declaring
256 costs answering an n = 256 product (256 KiB) to every witness in time.

The witness keeps ``r_seed`` to itself until it has judged the response
(it derives it from its own secret and the challenge id), then publishes it
in the :class:`Attestation`, so anyone holding the response can audit the
verdict (:func:`audit`). Because R is fixed before C arrives, the witness
computes ``A·(B·R)`` while the provider works, and checking a response costs
one n x n by n x k product: O(k·n²).

(Deriving R from a hash of the response instead, as first planned, would
make the check public-coin but puts a 256 KiB hash and two more n x n x k
products on the critical path; measured at n = 256 that kept the verifier
only ~16x cheaper than the provider, short of the 20x target.)

Soundness: if C ≠ A·B then D = A·B - C has a non-zero row d, and d·r = 0
for at most one value of any r_j given the others; r_j takes any one residue
with probability ≤ 33/2^32 < 2^-26.9 (u32 mod p, p ≈ 2^27). One round misses
with probability < 2^-26.9 and k rounds < 2^-26.9k, well inside the 2^-k of
a 0/1 vector. The provider answers once and never sees R before, so it
cannot grind; DEFAULT_ROUNDS = 3 gives < 2^-80.

Overflow: every entry is in [0, p-1] (a product entry >= p is rejected
before any arithmetic), so each dot product in A·B, B·R, A·X or C·R sums n
terms ≤ (p-1)² < 2^54; with n ≤ 512 the sum is < 2^63 and numpy int64 never
overflows. The codec caps n at :data:`MAX_N` = 256 (the product is n²·4
bytes = 256 KiB at n = 256, inside the 1 MiB message cap).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Final, TypeVar

import numpy as np
import numpy.typing as npt

from depin_p2p import wire
from depin_p2p.errors import CodecError, Reject, ValidationError
from depin_p2p.model import DeviceKind, DeviceRegistry

CHALLENGE_TYPE_ID: Final = 34
RESPONSE_TYPE_ID: Final = 35
ATTESTATION_TYPE_ID: Final = 36

MODULUS: Final = 134_217_689  # 2^27 - 39, prime
# A challenge's deadline is this long after the witness issues it (every witness sets it so);
# consensus refuses a pass slower than that, whatever a colluding witness signs.
CHALLENGE_DEADLINE_MS: Final = 5_000
MAX_N: Final = 256
MIN_CHALLENGE_N: Final = 8
OVERFLOW_SAFE_N: Final = 512  # n·(p-1)² < 2^63 for every n up to here
DEFAULT_ROUNDS: Final = 3
_WORDS_PER_HASH: Final = 16

Matrix = npt.NDArray[np.int64]
_T = TypeVar("_T")


class Outcome(enum.IntEnum):
    """What a witness saw; only PASSED counts toward the provider's claim."""

    PASSED = 1
    WRONG_RESULT = 2
    DEADLINE_MISSED = 3
    NO_RESPONSE = 4


@wire.message(type_id=CHALLENGE_TYPE_ID, domain=wire.Domain.COMPUTE_CHALLENGE)
@dataclass(frozen=True, slots=True)
class Challenge:
    """Compute A·B mod ``modulus`` for the matrices derived from ``seed``; signed by the witness."""

    witness: wire.PublicKeyBytes
    provider: wire.PublicKeyBytes
    epoch: wire.U64
    seed: wire.Bytes32
    n: wire.U16
    modulus: wire.U64
    issued_at_ms: wire.U64
    deadline_ms: wire.U64


@wire.message(type_id=RESPONSE_TYPE_ID, domain=wire.Domain.COMPUTE_RESPONSE)
@dataclass(frozen=True, slots=True)
class Response:
    """The product C, row-major, each entry a little-endian u32; signed by the provider."""

    provider: wire.PublicKeyBytes
    challenge_id: wire.Bytes32
    product: Annotated[bytes, wire.MaxLen(MAX_N * MAX_N * 4)]


@wire.message(type_id=ATTESTATION_TYPE_ID, domain=wire.Domain.COMPUTE_ATTESTATION)
@dataclass(frozen=True, slots=True)
class Attestation:
    """A witness's signed verdict on one challenge."""

    witness: wire.PublicKeyBytes
    provider: wire.PublicKeyBytes
    epoch: wire.U64
    challenge_id: wire.Bytes32
    outcome: Outcome
    elapsed_ms: wire.U64
    n: wire.U16
    r_seed: wire.Bytes32  # the Freivalds vectors' seed, revealed for audit

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED


def challenge_size(capacity: int) -> int:
    """The challenge side n for a provider of registered ``capacity``: capacity clamped to [8, MAX_N]."""
    return min(MAX_N, max(MIN_CHALLENGE_N, capacity))


def work_units(n: int) -> int:
    """The reward weight of a passed n x n challenge: its n³ multiply-adds."""
    return n**3


def challenge_id(envelope: wire.Envelope) -> bytes:
    """The id a response names: BLAKE2b-256 of the challenge envelope's body."""
    return wire.content_id(envelope.body)


# --------------------------------------------------------------------------
# Derivation (hash-based, vectorised)


def _words(tag: bytes, seed: bytes, count: int) -> npt.NDArray[np.uint32]:
    blocks = -(-count // _WORDS_PER_HASH)
    prefix = tag + seed
    data = b"".join(
        hashlib.blake2b(prefix + i.to_bytes(8, "big"), digest_size=64).digest() for i in range(blocks)
    )
    return np.frombuffer(data, dtype="<u4", count=count)


def derive_matrices(seed: bytes, n: int, modulus: int = MODULUS) -> tuple[Matrix, Matrix]:
    """A and B (n x n, int64, entries in [0, modulus)) from a challenge seed."""
    if not 1 <= n <= OVERFLOW_SAFE_N:
        raise ValueError(f"n = {n} outside [1, {OVERFLOW_SAFE_N}]")
    a = (_words(b"A", seed, n * n).astype(np.int64) % modulus).reshape(n, n)
    b = (_words(b"B", seed, n * n).astype(np.int64) % modulus).reshape(n, n)
    return a, b


def freivalds_vectors(r_seed: bytes, n: int, rounds: int, modulus: int = MODULUS) -> Matrix:
    """R (n x rounds): one random column per Freivalds round, from the witness's private seed."""
    return (_words(b"R", r_seed, n * rounds).astype(np.int64) % modulus).reshape(n, rounds)


def private_r_seed(witness_secret: bytes, challenge_id: bytes) -> bytes:
    """The witness's Freivalds seed for a challenge: unpredictable to anyone without the secret."""
    return hashlib.blake2b(b"depin-p2p/freivalds" + witness_secret + challenge_id, digest_size=32).digest()


def compute_product(a: Matrix, b: Matrix, modulus: int = MODULUS) -> Matrix:
    """C = A·B mod p (int64; exact because of the overflow bound in the module doc)."""
    product: Matrix = np.matmul(a, b) % modulus
    return product


def encode_product(c: Matrix) -> bytes:
    """Row-major little-endian u32 bytes of a product."""
    return c.astype("<u4").tobytes()


def decode_product(data: bytes, n: int, modulus: int = MODULUS) -> Matrix:
    """Inverse of :func:`encode_product`. Raises Reject('wrong_result') on a bad size or entry."""
    if len(data) != n * n * 4:
        raise Reject("wrong_result", f"product of {len(data)} bytes, expected {n * n * 4}")
    c = np.frombuffer(data, dtype="<u4").astype(np.int64).reshape(n, n)
    if int(c.max()) >= modulus:
        raise Reject("wrong_result", "product entry not reduced mod p")
    return c


def freivalds_check(a: Matrix, b: Matrix, c: Matrix, r: Matrix, modulus: int = MODULUS) -> bool:
    """True iff A·(B·R) ≡ C·R (mod p), column by column: one Freivalds round per column of R."""
    left = np.matmul(a, np.matmul(b, r) % modulus) % modulus
    right = np.matmul(c, r) % modulus
    return bool(np.array_equal(left, right))


# --------------------------------------------------------------------------
# Witness side


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    """A challenge the witness issued, with R and A·(B·R) computed ahead of the response."""

    challenge: Challenge
    challenge_id: bytes
    r_seed: bytes = field(repr=False)
    r: Matrix = field(repr=False, compare=False)
    expected: Matrix = field(repr=False, compare=False)  # A·((B·R) mod p) mod p


def prepare_challenge(
    envelope: wire.Envelope, *, witness_secret: bytes, rounds: int = DEFAULT_ROUNDS
) -> PendingChallenge:
    """Precompute the check of a challenge this witness signed (while the provider works).

    Args:
        envelope: the witness's own signed challenge.
        witness_secret: bytes only this witness knows (e.g. its key seed);
            with the challenge id it fixes the Freivalds vectors.
        rounds: Freivalds rounds k.

    Raises Reject('malformed' | 'bad_modulus' | 'bad_size') for a bad challenge.
    """
    challenge = _decode(envelope.body, Challenge)
    _check_shape(challenge)
    cid = challenge_id(envelope)
    r_seed = private_r_seed(witness_secret, cid)
    a, b = derive_matrices(challenge.seed, challenge.n, challenge.modulus)
    r = freivalds_vectors(r_seed, challenge.n, rounds, challenge.modulus)
    p = challenge.modulus
    expected: Matrix = np.matmul(a, np.matmul(b, r) % p) % p
    return PendingChallenge(challenge, cid, r_seed, r, expected)


def validate_response(
    pending: PendingChallenge,
    envelope: wire.Envelope,
    *,
    registry: DeviceRegistry,
    network_id: str,
    now_ms: int,
) -> int:
    """Check a provider's response; return the elapsed milliseconds on success.

    Args:
        pending: the witness's own challenge with its matrices.
        envelope: the provider's signed response.
        registry: registered devices.
        network_id: this network.
        now_ms: when the response arrived, by the witness's clock.

    Raises:
        Reject: from the envelope (``wrong_network``, ``malformed``,
            ``wrong_domain``, ``wrong_signer``, ``bad_signature``);
            ``unknown_provider`` (not the challenged, registered compute
            device); ``wrong_challenge``; ``deadline_missed``;
            ``wrong_result``.
    """
    ch = pending.challenge
    provider = registry.get_device(ch.provider)
    if provider is None or provider.kind is not DeviceKind.COMPUTE:
        raise Reject("unknown_provider", "the challenged provider is not a registered compute device")
    verified = wire.open_envelope(
        envelope, network_id=network_id, domain=wire.Domain.COMPUTE_RESPONSE, signer=ch.provider
    )
    response = verified.message
    if not isinstance(response, Response) or response.provider != ch.provider:
        raise Reject("unknown_provider", "response is not from the challenged provider")
    if response.challenge_id != pending.challenge_id:
        raise Reject("wrong_challenge", "response answers another challenge")
    if now_ms > ch.deadline_ms:
        raise Reject("deadline_missed", f"arrived at {now_ms}, deadline {ch.deadline_ms}")
    c = decode_product(response.product, ch.n, ch.modulus)
    if not np.array_equal(np.matmul(c, pending.r) % ch.modulus, pending.expected):
        raise Reject("wrong_result", "Freivalds check failed")
    return max(0, now_ms - ch.issued_at_ms)


def judge_response(
    pending: PendingChallenge,
    envelope: wire.Envelope | None,
    *,
    registry: DeviceRegistry,
    network_id: str,
    now_ms: int,
) -> Attestation:
    """The attestation a witness signs for a challenge (None: no response by the deadline).

    ``wrong_result`` and ``deadline_missed`` become a failed outcome; any
    other rejection (a stranger's or a forged response) is re-raised, since it
    says nothing about the provider.
    """
    ch = pending.challenge
    outcome, elapsed = Outcome.PASSED, 0
    if envelope is None:
        outcome, elapsed = Outcome.NO_RESPONSE, max(0, now_ms - ch.issued_at_ms)
    else:
        try:
            elapsed = validate_response(
                pending, envelope, registry=registry, network_id=network_id, now_ms=now_ms
            )
        except ValidationError as exc:
            if exc.code == "wrong_result":
                outcome = Outcome.WRONG_RESULT
            elif exc.code == "deadline_missed":
                outcome = Outcome.DEADLINE_MISSED
            else:
                raise
            elapsed = max(0, now_ms - ch.issued_at_ms)
    return Attestation(
        ch.witness, ch.provider, ch.epoch, pending.challenge_id, outcome, elapsed, ch.n, pending.r_seed
    )


def audit(challenge: Challenge, response: Response, attestation: Attestation) -> bool:
    """Re-run a published verdict: does the product pass with the revealed vectors?

    True when the Freivalds check passes with ``attestation.r_seed`` (with the
    attestation's round count assumed to be DEFAULT_ROUNDS); a PASSED
    attestation for which this is False proves the witness lied.
    """
    try:
        c = decode_product(response.product, challenge.n, challenge.modulus)
    except Reject:
        return False
    a, b = derive_matrices(challenge.seed, challenge.n, challenge.modulus)
    r = freivalds_vectors(attestation.r_seed, challenge.n, DEFAULT_ROUNDS, challenge.modulus)
    return freivalds_check(a, b, c, r, challenge.modulus)


# --------------------------------------------------------------------------
# Provider side


def validate_challenge(
    envelope: wire.Envelope,
    *,
    provider: bytes,
    network_id: str,
    allowed_witnesses: frozenset[bytes],
    expected_n: int,
) -> Challenge:
    """Check a challenge before spending compute on it.

    Args:
        envelope: the signed challenge.
        provider: this provider's device id.
        network_id: this network.
        allowed_witnesses: the devices assigned to this provider this epoch.
        expected_n: :func:`challenge_size` of this provider's registered capacity.

    Raises:
        Reject: from the envelope; ``wrong_signer``; ``not_assigned`` (the
            signer is not one of this provider's witnesses);
            ``unknown_provider`` (addressed to someone else); ``bad_modulus``;
            ``bad_size``; ``wrong_size`` (another size than the capacity
            sets: consensus would not count the attestation, so the work
            would be wasted).
    """
    verified = wire.open_envelope(envelope, network_id=network_id, domain=wire.Domain.COMPUTE_CHALLENGE)
    ch = verified.message
    if not isinstance(ch, Challenge):
        raise Reject("malformed", "not a Challenge")
    if ch.witness != envelope.signer:
        raise Reject("wrong_signer", "challenge signed by another key than its witness")
    if ch.witness not in allowed_witnesses:
        raise Reject("not_assigned", "challenger is not assigned to this provider")
    if ch.provider != provider:
        raise Reject("unknown_provider", "challenge addressed to another provider")
    _check_shape(ch)
    if ch.n != expected_n:
        raise Reject("wrong_size", f"challenge at n = {ch.n}, this provider's capacity sets {expected_n}")
    return ch


def respond(challenge: Challenge, challenge_envelope: wire.Envelope) -> Response:
    """Do the work: derive A, B, multiply, and build the response (unsigned)."""
    a, b = derive_matrices(challenge.seed, challenge.n, challenge.modulus)
    c = compute_product(a, b, challenge.modulus)
    return Response(challenge.provider, challenge_id(challenge_envelope), encode_product(c))


def validate_attestation(
    envelope: wire.Envelope,
    *,
    network_id: str,
    epoch: int,
    assigned: frozenset[bytes],
    expected_n: int,
    verify: wire.Verifier = wire.verify_signature,
) -> Attestation:
    """Check an attestation for inclusion in an epoch value (consensus re-checks this).

    Args:
        envelope: the signed attestation.
        network_id: this network.
        epoch: the epoch being decided.
        assigned: the witnesses assigned to the attestation's provider.
        expected_n: :func:`challenge_size` of the provider's registered capacity.

    Raises:
        Reject: from the envelope; ``wrong_signer``; ``wrong_epoch``;
            ``not_assigned``; ``wrong_size`` (a challenge of another size
            than the provider's capacity sets: it proves other work than
            the one paid for); ``elapsed_over_deadline`` (a pass that took
            longer than :data:`CHALLENGE_DEADLINE_MS`: no honest witness
            signs it, so it proves only a witness vouching for a slow provider).
    """
    verified = wire.open_envelope(
        envelope, network_id=network_id, domain=wire.Domain.COMPUTE_ATTESTATION, verify=verify
    )
    att = verified.message
    if not isinstance(att, Attestation):
        raise Reject("malformed", "not an Attestation")
    if att.witness != envelope.signer:
        raise Reject("wrong_signer", "attestation signed by another key than its witness")
    if att.epoch != epoch:
        raise Reject("wrong_epoch", f"attestation for epoch {att.epoch}, deciding {epoch}")
    if att.witness not in assigned:
        raise Reject("not_assigned", "attesting device is not assigned to this provider")
    if att.n != expected_n:
        raise Reject("wrong_size", f"attestation at n = {att.n}, the provider's capacity sets {expected_n}")
    if att.outcome is Outcome.PASSED and att.elapsed_ms > CHALLENGE_DEADLINE_MS:
        raise Reject("elapsed_over_deadline", f"pass in {att.elapsed_ms} ms > {CHALLENGE_DEADLINE_MS} ms")
    return att


def _check_shape(ch: Challenge) -> None:
    if ch.modulus != MODULUS:
        raise Reject("bad_modulus", f"modulus {ch.modulus}, expected {MODULUS}")
    if not 1 <= ch.n <= MAX_N:
        raise Reject("bad_size", f"n = {ch.n} outside [1, {MAX_N}]")


def _decode(body: bytes, cls: type[_T]) -> _T:
    try:
        return wire.decode_as(body, cls)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
