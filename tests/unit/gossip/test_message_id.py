"""Gossip message ids (issue 12 item 6): the topic is in the id; the example in docs/PROTOCOL.md holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

from depin_p2p.gossip.transport import message_id

DOC = Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md"
EXAMPLE = "f17728cf46b91d2de5ec102729167220b1d027ae543859b68a2d8c4bd8d441ca"


def test_the_documented_example() -> None:
    topic = "/depin/devnet/proofs/1"
    assert message_id([topic], b"hello").hex() == EXAMPLE
    spelled_out = hashlib.blake2b(len(topic).to_bytes(4, "big") + topic.encode() + b"hello", digest_size=32)
    assert spelled_out.hexdigest() == EXAMPLE
    assert EXAMPLE in DOC.read_text()


def test_the_topic_separates_ids_and_the_length_prefix_separates_topic_from_data() -> None:
    assert message_id(["/a/1"], b"x") != message_id(["/b/1"], b"x")
    assert message_id(["/a/1"], b"x") == message_id(["/a/1"], b"x")
    assert message_id(["ab"], b"c") != message_id(["a"], b"bc")
