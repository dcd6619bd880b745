"""The chain link the next epoch builds on is the one consensus passes, on both backends."""

from __future__ import annotations

from pathlib import Path

from depin_p2p import wire
from depin_p2p.ledger.state import EpochValue, apply_epoch
from tests.unit.ledger.helpers import GENESIS_HASH, NETWORK, memory_ledger, open_store


def test_explicit_certificate_hash_becomes_the_link(tmp_path: Path) -> None:
    link = b"\x07" * 32
    mem = memory_ledger()
    value = EpochValue(1, GENESIS_HASH, (), (), (), 0)
    mem.commit(apply_epoch(mem, value, NETWORK), b"certificate-bytes", link)
    assert mem.last_certificate_hash() == link
    store = open_store(tmp_path / "db")
    try:
        changes = store.apply(value, NETWORK)
        store.commit_epoch(changes, b"certificate-bytes", certificate_hash=link)
        assert store.read(lambda v: v.last_certificate_hash()) == link
        # Without one, the link is the certificate's content id.
        changes = store.apply(EpochValue(2, link, (), (), (), 0), NETWORK)
        store.commit_epoch(changes, b"other")
        assert store.read(lambda v: v.last_certificate_hash()) == wire.content_id(b"other")
    finally:
        store.close()
