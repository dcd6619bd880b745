"""The signer: persist, then sign; never two different messages for one step."""

from __future__ import annotations

import pytest

from depin_p2p import wire
from depin_p2p.consensus.signer import MemorySignStateStore, Signer, SignRefused, SignState
from depin_p2p.consensus.state import GENESIS_PREV_HASH, Candidate, Lock, Precommit, Prevote, Proposal
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import StorageError

NET = "signer-net"
KEY = KeyPair.from_seed(b"\x11" * 32)
VID = b"\x0a" * 32


class RecordingStore(MemorySignStateStore):
    """Keeps every save, to check what was durable when a signature came out."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[bytes] = []

    def save(self, data: bytes) -> None:
        self.saves.append(data)
        super().save(data)


def signer(store: MemorySignStateStore, epoch: int = 0, wait: int = 0, restored: bool = False) -> Signer:
    return Signer(KEY, store, NET, current_epoch=epoch, startup_wait_epochs=wait, restored=restored)


def test_the_signature_is_durable_before_it_is_returned() -> None:
    store = RecordingStore()
    s = signer(store)
    env = s.sign(Prevote(0, 0, VID))
    saved = wire.decode_as(store.saves[-1], SignState)
    assert saved.signed == (env,)
    assert (saved.epoch, saved.round, saved.step) == (0, 0, 2)
    wire.open_envelope(env, network_id=NET, domain=wire.Domain.PREVOTE, signer=KEY.public_key)


def test_a_signed_step_gives_back_its_bytes_never_a_second_signature() -> None:
    store = RecordingStore()
    s = signer(store)
    env = s.sign(Prevote(0, 0, VID))
    saves = len(store.saves)
    assert s.sign(Prevote(0, 0, VID)) == env
    # Asked for another prevote of the same round: what stands is the one signed.
    assert s.sign(Prevote(0, 0, None)) == env
    assert len(store.saves) == saves  # nothing new signed, nothing written


def test_going_back_is_refused() -> None:
    s = signer(MemorySignStateStore())
    s.sign(Precommit(0, 3, None))
    back = Proposal(0, 1, Candidate(0, GENESIS_PREV_HASH, b""), None)
    for msg in (Prevote(0, 3, None), Prevote(0, 2, None), back):
        with pytest.raises(SignRefused) as info:
            s.sign(msg)
        assert info.value.code == "regression"
    s.sign(Prevote(1, 0, None))  # a new epoch is forward
    with pytest.raises(SignRefused, match="regression"):
        s.sign(Precommit(0, 9, None))


def test_after_a_restart_the_same_votes_come_back_and_conflicts_stay_refused() -> None:
    store = MemorySignStateStore()
    s = signer(store, epoch=4)
    cand = Candidate(4, GENESIS_PREV_HASH, b"v")
    prop = s.sign(Proposal(4, 2, cand, None))
    pv = s.sign(Prevote(4, 2, VID))
    lock = Lock(2, VID, cand, (pv,))
    pc = s.sign(Precommit(4, 2, VID), lock)
    again = signer(store, epoch=4)  # restart: same store
    assert again.last_signed(4) == (prop, pv, pc)
    assert again.resume_round(4) == 2
    assert again.lock(4) == lock
    assert again.sign(Prevote(4, 2, VID)) == pv
    assert again.sign(Precommit(4, 2, None)) == pc
    assert again.lock(4) == lock
    assert again.lock(5) is None and again.last_signed(5) == ()


def test_a_restart_between_the_signatures_and_the_commit_gets_the_stored_proposal() -> None:
    # Issue 10 item 2: the commit of epoch 7 failed (disk full) after this proposer signed all
    # three steps of round 0. Restarted, its state machine re-proposes the locked value with
    # valid round 0 (or builds a fresh value): the proposal already signed comes back instead.
    store = MemorySignStateStore()
    s = signer(store, epoch=7)
    cand = Candidate(7, GENESIS_PREV_HASH, b"v")
    prop = s.sign(Proposal(7, 0, cand, None))
    pv = s.sign(Prevote(7, 0, VID))
    pc = s.sign(Precommit(7, 0, VID), Lock(0, VID, cand, (pv,)))
    again = signer(store, epoch=7)
    assert again.sign(Proposal(7, 0, cand, 0)) == prop
    assert again.sign(Proposal(7, 0, Candidate(7, GENESIS_PREV_HASH, b"fresh"), None)) == prop
    assert again.sign(Prevote(7, 0, VID)) == pv and again.sign(Precommit(7, 0, VID)) == pc
    assert store.data is not None and wire.decode_as(store.data, SignState).signed == (prop, pv, pc)


def test_a_nil_precommit_keeps_the_lock_and_a_new_epoch_drops_it() -> None:
    s = signer(MemorySignStateStore())
    s.sign(Precommit(0, 1, VID))
    s.sign(Precommit(0, 2, None))
    assert s.lock(0) == Lock(1, VID)
    s.sign(Prevote(1, 0, None))
    assert s.lock(1) is None


def test_an_empty_store_waits_and_the_wait_survives_a_restart() -> None:
    store = MemorySignStateStore()
    s = signer(store, epoch=10, wait=2)
    with pytest.raises(SignRefused, match="startup_wait"):
        s.sign(Prevote(11, 0, None))
    s2 = signer(store, epoch=11, wait=2)  # restarted during the wait: the floor stays 12
    assert s2.floor_epoch == 12
    with pytest.raises(SignRefused, match="startup_wait"):
        s2.sign(Prevote(11, 0, None))
    s2.sign(Prevote(12, 0, None))


def test_a_restored_store_is_not_trusted() -> None:
    store = MemorySignStateStore()
    signer(store, epoch=3).sign(Prevote(3, 0, None))
    s = signer(store, epoch=3, wait=1, restored=True)
    assert s.floor_epoch == 4 and s.last_signed(3) == ()


def test_a_corrupt_store_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        signer(MemorySignStateStore(b"\x93garbage"))


def test_the_latest_message_of_each_step_is_kept_across_rounds() -> None:
    store = MemorySignStateStore()
    s = signer(store)
    pc0 = s.sign(Precommit(0, 0, None))
    pv1 = s.sign(Prevote(0, 1, VID))
    # A peer still in round 0 may need our round-0 precommit after we restart in round 1.
    assert set(signer(store).last_signed(0)) == {pc0, pv1}
    pc1 = s.sign(Precommit(0, 1, VID))
    assert set(signer(store).last_signed(0)) == {pv1, pc1}
