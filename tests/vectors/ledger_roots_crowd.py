"""Account ids ground so that their Merkle key paths share one 16-bit prefix (review finding F11).

Each id is ``PREFIX ‖ u64 counter`` (32 bytes), kept when the first two
bytes of its key path ``H(0x03 ‖ 0x01 ‖ id)`` (BLAKE2b-256; ``0x01`` is the
account namespace) equal ``TARGET``: about 2^16 tries per id, what any
attacker can afford. Regenerate (a few seconds per 100 ids) with
``python -m tests.vectors.ledger_roots_crowd > tests/vectors/ledger_roots_crowd.json``.
"""

from __future__ import annotations

import hashlib
import json

PREFIX = b"F11 bucket crowding, ground ids."[:24]
TARGET = 0xBEEF
COUNT = 256


def grind(count: int = COUNT) -> list[bytes]:
    base = hashlib.blake2b(b"\x03\x01" + PREFIX, digest_size=32)
    out = []
    counter = 0
    target = TARGET.to_bytes(2, "big")
    while len(out) < count:
        h = base.copy()
        suffix = counter.to_bytes(8, "big")
        h.update(suffix)
        if h.digest()[:2] == target:
            out.append(PREFIX + suffix)
        counter += 1
    return out


if __name__ == "__main__":
    ids = grind()
    print(json.dumps({"prefix_bits": 16, "target": TARGET, "ids": [i.hex() for i in ids]}, indent=1))
