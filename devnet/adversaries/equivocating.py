"""``equivocating-validator``: beside each prevote and precommit it signs, a second one for another value.

The twin of a vote for a value is a vote for nil; the twin of a nil vote is a
vote for a value id nobody proposed. Both are signed with the validator's
key, so honest nodes that receive both hold duplicate-vote evidence, include
it in a later value and slash the validator.

The role (:class:`devnet.adversaries.consensus.EquivocatingValidator`)
publishes them from its ``on_publish`` hook, in the simulator and on
processes (:mod:`devnet.adversaries.proc`).
"""

from __future__ import annotations

import hashlib

from depin_p2p import wire
from depin_p2p.consensus.state import Precommit, Prevote
from depin_p2p.crypto import KeyPair

ROLE = "equivocating-validator"


def twin_vote(
    envelope: wire.Envelope, key: KeyPair, network_id: str, from_epoch: int
) -> wire.Envelope | None:
    """The conflicting twin of ``envelope`` if it is a vote of ours at or after ``from_epoch``, else None."""
    if envelope.signer != key.public_key:
        return None
    msg = wire.decode(envelope.body)
    if not isinstance(msg, Prevote | Precommit) or msg.epoch < from_epoch:
        return None
    other = None if msg.value_id is not None else hashlib.blake2b(envelope.body, digest_size=32).digest()
    return wire.seal(type(msg)(msg.epoch, msg.round, other), key, network_id)
