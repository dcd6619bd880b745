"""Consensus vectors: proposer rotation, value ids, vote bytes and a certificate, pinned.

Another implementation checks itself against ``consensus_vectors.json``. Regenerate
(only on a deliberate change) with
``python -m tests.vectors.consensus_vectors > tests/vectors/consensus_vectors.json``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from depin_p2p import wire
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    Candidate,
    Certificate,
    CommitSig,
    Precommit,
    ValidatorSet,
    certificate_hash,
    precommit_signing_bytes,
    proposer_for,
    value_id_of,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.model import Validator

NETWORK_ID = "depin-vectors"
POWERS = (5, 3, 1, 1)


def keys() -> list[KeyPair]:
    seeds = [hashlib.blake2b(b"vector-validator%d" % i, digest_size=32).digest() for i in range(4)]
    return [KeyPair.from_seed(seed) for seed in seeds]


def compute() -> dict[str, Any]:
    ks = keys()
    vals = ValidatorSet.of([Validator(k.public_key, p) for k, p in zip(ks, POWERS, strict=True)])
    cand = Candidate(7, GENESIS_PREV_HASH, b"epoch seven value")
    vid = value_id_of(cand)
    signers = sorted(ks[:2], key=lambda k: k.public_key)  # power 8 of 10 > 2/3
    data = precommit_signing_bytes(NETWORK_ID, 7, 1, vid)
    cert = Certificate(cand, 1, tuple(CommitSig(k.public_key, k.sign(data)) for k in signers))
    return {
        "network_id": NETWORK_ID,
        "validators": [{"public_key": v.address.hex(), "power": v.power} for v in vals.members],
        "proposers": [
            {
                "prev_cert_hash": prev.hex(),
                "epoch": epoch,
                "round": rnd,
                "proposer": proposer_for(vals, prev, epoch, rnd).hex(),
            }
            for prev in (GENESIS_PREV_HASH, b"\x01" * 32)
            for epoch in (0, 7)
            for rnd in range(6)
        ],
        "candidate": wire.encode(cand).hex(),
        "value_id": vid.hex(),
        "precommit_signing_bytes": data.hex(),
        "nil_prevote_body": wire.encode(Precommit(7, 1, None)).hex(),
        "certificate": wire.encode(cert).hex(),
        "certificate_hash": certificate_hash(cert).hex(),
    }


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))
