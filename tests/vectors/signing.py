"""Signing vectors: fixed seed, one message per domain, exact bytes and signatures.

Regenerate (only on a deliberate wire change) with
``python -m tests.vectors.signing > tests/vectors/signing.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from depin_p2p import wire
from depin_p2p.crypto import KeyPair

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
NETWORK_ID = "depin-vectors"


@wire.message(type_id=210)
@dataclass(frozen=True, slots=True)
class VectorSample:
    epoch: wire.U64
    payload: bytes
    note: str


def compute() -> dict[str, Any]:
    key = KeyPair.from_seed(SEED)
    out: dict[str, Any] = {
        "seed": SEED.hex(),
        "public_key": key.public_key.hex(),
        "address": key.address,
        "peer_id": key.peer_id,
        "network_id": NETWORK_ID,
        "cases": [],
    }
    for i, domain in enumerate(wire.Domain):
        body = wire.encode(VectorSample(epoch=i, payload=bytes([i]) * 4, note=domain.value))
        signing = wire.signing_bytes(NETWORK_ID, domain, 210, body)
        out["cases"].append(
            {
                "domain": domain.value,
                "type_id": 210,
                "body": body.hex(),
                "signing_bytes": signing.hex(),
                "signature": key.sign(signing).hex(),
            }
        )
    return out


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))
