"""Ledger state-root vectors: a fixed small state, every entry, its path, leaf, the roots and proofs.

Regenerate (only on a deliberate change of the state encoding or the tree)
with ``python -m tests.vectors.ledger_roots > tests/vectors/ledger_roots.json``.
"""

from __future__ import annotations

import json
from typing import Any

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger import merkle
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import (
    Account,
    EpochValue,
    InitialState,
    Reward,
    Slash,
    Stake,
    Transfer,
    Unstake,
    account_key,
    apply_epoch,
    compute_genesis_changes,
)
from depin_p2p.model import Device, DeviceKind

NETWORK_ID = "depin-vectors"
GENESIS_HASH = bytes(range(32))
KEYS = [KeyPair.from_seed(bytes([0x10 + i]) * 32) for i in range(3)]
DEVICE = KeyPair.from_seed(b"\x20" * 32)


def _state(mem: MemoryLedger) -> dict[str, Any]:
    entries = sorted(mem.entries())
    present = entries[0][0]
    absent = account_key(b"\x99" * 32)
    return {
        "root": mem.state_root().hex(),
        "entries": [
            {
                "key": k.hex(),
                "value": v.hex(),
                "path": merkle.key_path(k).to_bytes(32, "big").hex(),
                "value_hash": merkle.value_hash(v).hex(),
                "leaf": merkle.leaf_hash(k, v).hex(),
            }
            for k, v in entries
        ],
        # Encoded MerkleProofs (wire bytes): one present key, one absent key, and both at once.
        "proofs": {
            "present": {"key": present.hex(), "proof": wire.encode(merkle.prove(mem, present)).hex()},
            "absent": {"key": absent.hex(), "proof": wire.encode(merkle.prove(mem, absent)).hex()},
            "both": wire.encode(merkle.prove_many(mem, [present, absent])).hex(),
        },
    }


def compute() -> dict[str, Any]:
    a, b, c = (k.public_key for k in KEYS)
    device = Device(DEVICE.public_key, a, DeviceKind.RADIO, 0x8C2A100D2C49DFF, 868_100_000, 1400, 300, 0, 0)
    initial = InitialState(
        accounts=tuple(sorted([(a, Account(5_000_000, 0)), (b, Account(1_000, 0))])),
        devices=(device,),
        validators=((c, 2_000_000),),
        genesis_hash=GENESIS_HASH,
    )
    mem = MemoryLedger()
    mem.commit(compute_genesis_changes(mem, initial), b"")
    out: dict[str, Any] = {"empty_root": merkle.EMPTY_ROOT.hex(), "genesis": _state(mem)}
    # Epoch 1 pins every record kind: a transfer, a stake partly unbonding
    # (ValidatorStake with an Unbonding entry) and a slash (UsedEvidence).
    txs = (
        wire.seal(Transfer(0, b, 1_500), KEYS[0], NETWORK_ID),
        wire.seal(Stake(1, 1_000_000), KEYS[0], NETWORK_ID),
        wire.seal(Unstake(2, 400_000), KEYS[0], NETWORK_ID),
    )
    slashes = (Slash(c, 1_000, bytes([0x5A]) * 32),)
    value = EpochValue(1, GENESIS_HASH, txs, (Reward(c, 700), Reward(b, 300)), slashes, 1_000)
    mem.commit(apply_epoch(mem, value, NETWORK_ID), b"certificate-1")
    out["epoch_1"] = {"network_id": NETWORK_ID, "value": wire.encode(value).hex(), **_state(mem)}
    return out


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))
