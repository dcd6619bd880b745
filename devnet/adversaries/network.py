"""Network roles: a node abusing the gossip layer itself.

- ``invalid-signature-flood``: every 100 ms publishes one of its own votes
  again with a corrupted signature (a new content id each time, so no
  de-duplication spares the receivers the check). Caught as
  ``bad_signature`` rejects; the forwarder is penalised and banned.
"""

from __future__ import annotations

import dataclasses

import trio

from depin_p2p import wire
from depin_p2p.consensus.state import Prevote
from devnet.adversaries.base import Host, Role


class InvalidSignatureFlood(Role):
    name = "invalid-signature-flood"
    family = "network"
    summary = "votes with corrupted signatures at 10/s"
    codes = frozenset({"bad_signature"})
    validator_only = True  # a validator's key: receivers must check the signature to refuse it

    async def run(self, host: Host) -> None:
        n = 0
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 100)
            if not self.active(host):
                continue
            n += 1
            env = wire.seal(Prevote(host.current_epoch(), n % 4, None), host.key, host.network_id)
            sig = bytearray(env.signature)
            sig[0] ^= 0xFF
            forged = dataclasses.replace(env, signature=bytes(sig))
            host.attack.note("forged_signatures", host.clock.now_ms())
            try:
                await host.publish_raw(host.consensus_topic, wire.encode(forged))
            except trio.ClosedResourceError:
                return


ROLES: tuple[type[Role], ...] = (InvalidSignatureFlood,)
