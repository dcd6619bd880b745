"""The only place that signs proposals and votes: never two different ones for one step.

Like cometbft's privval, the signer keeps the last signed (epoch, round,
step) and refuses anything that goes back; asked again for a message of a
step it already signed in that round it returns the identical bytes it
signed before, never a second, different signature: what this key signed
for that step stands, and the caller adopts it. After a crash between the
signatures and the epoch's commit (a full disk), the restarted state
machine asks anew, knowing nothing of what it signed (a fresh value, or
the lock's value with another valid round); returning the stored message
lets it finish the round exactly as it went before the crash instead of
stalling on a refusal. Unlike privval it keeps the latest message of each
step (a restarted node re-sends them: a peer still in the round of our last
precommit may need exactly that one to move on) and the lock: the round and value of its last non-nil
precommit, so a restarted node cannot forget its lock (amnesia).

The sign-state is written through :class:`SignStateStore` and is durable
*before* a signature leaves :meth:`Signer.sign`: persist, then speak.

A node starting from an empty store, or told its store was restored from a
backup, refuses to sign until ``startup_wait_epochs`` epochs have passed: it
cannot know what it signed before, so it lets the network move past it.
The floor epoch is persisted at once, so a crash during the wait does not
restart the wait from a later epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Protocol

from depin_p2p import wire
from depin_p2p.consensus.state import (
    MAX_VALIDATORS,
    Candidate,
    Lock,
    Precommit,
    Prevote,
    Proposal,
    step_of,
)
from depin_p2p.errors import CodecError, ConsensusError, StorageError

SIGN_STATE_MAX_BYTES = 4 * wire.MAX_MESSAGE_BYTES


class SignStateStore(Protocol):
    """Durable storage for the signer's state (the ledger's synced LMDB in production)."""

    def load(self) -> bytes | None:
        """The last saved bytes, or None if nothing was ever saved."""
        ...

    def save(self, data: bytes) -> None:
        """Replace the saved bytes; must be durable (synced) before it returns."""
        ...


class MemorySignStateStore:
    """In-memory store for tests and the simulator; ``data`` survives a simulated crash."""

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data


@wire.struct
@dataclass(frozen=True, slots=True)
class LockRecord:
    """The persisted form of :class:`~depin_p2p.consensus.state.Lock`."""

    round: wire.U32
    value_id: wire.Bytes32
    candidate: Candidate | None
    pol: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(MAX_VALIDATORS)]


@wire.message(type_id=86)
@dataclass(frozen=True, slots=True)
class SignState:
    """What the signer persists.

    Attributes:
        floor_epoch: sign nothing for an epoch below this (startup wait).
        epoch, round, step: the last signed position; step 0 when nothing was signed yet.
        signed: the latest envelope signed for each step in ``epoch`` (at most three).
        lock: own last non-nil precommit in ``epoch``, if any.
    """

    floor_epoch: wire.U64
    epoch: wire.U64
    round: wire.U32
    step: wire.U8
    signed: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(3)]
    lock: LockRecord | None


class SignRefused(ConsensusError):
    """The signer will not sign this message; ``code`` says why (never sent, never retried)."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        super().__init__(f"{code}: {detail}" if detail else code)


class Signer:
    """Signs consensus messages for one validator key, persisting before it returns.

    Not pure (it does I/O through the store) and not thread-safe: the
    consensus loop owns it, like it owns the consensus state.
    """

    def __init__(
        self,
        key: wire.Signer,
        store: SignStateStore,
        network_id: str,
        *,
        current_epoch: int,
        startup_wait_epochs: int,
        restored: bool = False,
    ) -> None:
        """Load the sign-state, or start a wait if there is none (or it came from a backup).

        Args:
            key: the validator key.
            store: durable storage; its contents are trusted only if ``restored`` is False.
            network_id: network the signatures are for.
            current_epoch: the epoch the node is about to run.
            startup_wait_epochs: epochs to sit out after an empty or restored sign-state
                (0 at genesis, where every validator starts empty together).
            restored: the data dir was restored from a backup or copied from another machine.

        Raises:
            StorageError: the stored bytes are not a sign-state.
        """
        self._key = key
        self._store = store
        self._network_id = network_id
        raw = store.load()
        state: SignState | None = None
        if raw is not None:
            try:
                # A sign-state may hold a proposal and a locked value: larger than one message.
                state = wire.decode_as(raw, SignState, max_size=SIGN_STATE_MAX_BYTES)
            except CodecError as exc:
                raise StorageError(f"sign-state is corrupt: {exc}") from None
        if state is None or restored:
            floor = current_epoch + startup_wait_epochs
            if state is not None:
                floor = max(floor, state.floor_epoch)
            state = SignState(floor, 0, 0, 0, (), None)
            store.save(wire.encode(state))
        self._state = state

    @property
    def public_key(self) -> bytes:
        return self._key.public_key

    @property
    def floor_epoch(self) -> int:
        """No signatures for epochs below this one."""
        return self._state.floor_epoch

    def lock(self, epoch: int) -> Lock | None:
        """The lock to restore into a fresh instance of ``epoch``."""
        st = self._state
        if st.lock is None or st.epoch != epoch:
            return None
        return Lock(st.lock.round, st.lock.value_id, st.lock.candidate, st.lock.pol)

    def resume_round(self, epoch: int) -> int:
        """The round to restart ``epoch`` at: the last one this key signed in, else 0."""
        return self._state.round if self._state.epoch == epoch and self._state.step else 0

    def last_signed(self, epoch: int) -> tuple[wire.Envelope, ...]:
        """The latest message of each step signed in ``epoch``, to re-send identically after a restart."""
        return self._state.signed if self._state.epoch == epoch else ()

    def sign(self, msg: Proposal | Prevote | Precommit, lock: Lock | None = None) -> wire.Envelope:
        """Sign ``msg``, persisting first; or return what this key already signed for its step.

        For a step already signed in ``msg``'s epoch and round the stored
        envelope comes back, whether or not it is ``msg``: identical bytes,
        no new signature. The caller must use the returned envelope (and
        its message), never ``msg``. A newly signed non-nil precommit
        records its lock (``lock`` if given: value and proof of lock; else
        just round and value id) in the same durable write.

        Raises:
            SignRefused: ``startup_wait`` (epoch below the floor), ``regression``
                (an earlier epoch, round or step).
        """
        st = self._state
        step = int(step_of(msg))
        if msg.epoch < st.floor_epoch:
            raise SignRefused("startup_wait", f"epoch {msg.epoch} < {st.floor_epoch}")
        here = (msg.epoch, msg.round)
        last = (st.epoch, st.round)
        if st.step and here == last:
            for env in st.signed:
                if _same_type(env, msg) and _position(env) == here:
                    return env  # ``msg`` itself, or what stands for its step: never a second one
            if step < st.step:
                raise SignRefused("regression", f"step {step} after {st.step} in {here}")
        elif st.step and here < last:
            raise SignRefused("regression", f"{here} after {last}")
        # Keep the latest message of each step of this epoch, whatever its round: after a
        # restart they are re-sent, and peers still in an older round may need exactly those.
        signed = tuple(e for e in st.signed if msg.epoch == st.epoch and not _same_type(e, msg))
        env = wire.seal(msg, self._key, self._network_id)
        record = st.lock if msg.epoch == st.epoch else None
        if isinstance(msg, Precommit) and msg.value_id is not None:
            if lock is not None and lock.value_id == msg.value_id and lock.round == msg.round:
                record = LockRecord(msg.round, msg.value_id, lock.candidate, lock.pol)
            else:
                record = LockRecord(msg.round, msg.value_id, None, ())
        new = replace(st, epoch=msg.epoch, round=msg.round, step=step, signed=(*signed, env), lock=record)
        self._store.save(wire.encode(new))  # durable before the signature is returned
        self._state = new
        return env


def signed_fields(msg: Proposal | Prevote | Precommit, env: wire.Envelope) -> dict[str, object]:
    """What a validator signed, as its ``consensus.vote.signed`` log line says it."""
    body = wire.content_id(env.body).hex()
    return {"kind": type(msg).__name__.lower(), "epoch": msg.epoch, "round": msg.round, "body": body}


def _position(env: wire.Envelope) -> tuple[int, int]:
    msg = wire.decode(env.body)
    assert isinstance(msg, Proposal | Prevote | Precommit)
    return (msg.epoch, msg.round)


def _same_type(env: wire.Envelope, msg: object) -> bool:
    return wire.peek_type_id(env.body) == wire.info_of(type(msg)).type_id


