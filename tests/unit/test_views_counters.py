"""/status shows every counter as JSON, those keyed by a key included."""

from __future__ import annotations

import json

from depin_p2p.consensus.driver import ConsensusCounters
from depin_p2p.gossip.transport import TransportCounters
from depin_p2p.views import counters


def test_counters_keyed_by_bytes_are_shown_by_hex_key() -> None:
    """proposals_missed is keyed by the slot proposer's key: /status once crashed a node with
    ``TypeError: keys must be str`` the first time a slot was missed."""
    c = ConsensusCounters()
    c.proposals_missed[b"\x01\x02"] = 3
    t = TransportCounters()
    t.count_reject("bad_signature", "peer-a")
    shown = json.loads(json.dumps({"consensus": counters(c), "transport": counters(t)}))
    assert shown["consensus"]["proposals_missed"] == {"0102": 3}
    assert shown["transport"]["codes_by_peer"] == {"peer-a": {"bad_signature": 1}}
