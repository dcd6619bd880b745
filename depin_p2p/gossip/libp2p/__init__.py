"""The libp2p transport: TCP + Noise + Yamux, GossipSub, request/response streams.

This package holds the ONLY modules that import libp2p; ``Any`` from its
untyped API stays here. Importing it has no side effect beyond importing
libp2p itself. Its parts:

- :mod:`.transport`: :class:`Libp2pTransport`, the facade that builds the
  host and wires the parts below; :class:`Libp2pConfig`.
- :mod:`._pubsub`: the guarded ``Pubsub`` and ``GossipSub`` subclasses.
- :mod:`._topics`: our subscriptions, validators and per-peer rate limit.
- :mod:`._peers`: connections, the address book and re-dials, penalties and bans.
- :mod:`._ping`: liveness (our loop's lag, pings, dropping frozen peers).
- :mod:`._streams`: length-prefixed request/response streams.

py-libp2p 0.8.1 needs defending (see ``LIBP2P_NOTES.md``):

- A pubsub frame that is not valid protobuf, or a message whose ``key`` is
  garbage, raises out of ``Pubsub.stream_handler`` / ``push_msg`` and ends
  the whole trio run. :class:`._pubsub._GuardedPubsub` overrides both: the stream is
  reset, the peer is charged a severe penalty (a ban), the node keeps running.
- Exceptions in our validators and request handlers are caught here too.
- Built-in spam protection (10 msg/s per peer and topic, own publishes
  included) and adaptive gossip are off; we rate-limit per peer ourselves and
  trim ``recent_message_deliveries`` which otherwise grows without bound.
- A frozen peer is never noticed by libp2p: we ping every peer and drop the
  ones that miss several pings in a row; the ping timeout grows with our own
  measured event-loop lag, and a round during which our own loop stalled
  judges nobody. Restarted peers are re-dialled from our own address book
  with back-off, not libp2p's 60 s reconnect.
- libp2p's peer scoring never disconnects: our penalty table does.
- Only a proven offence costs a peer. A pubsub frame is malformed only when
  it was read whole and fails to parse while its stream is still open; a
  stream that fails while a connection is torn down, a cancelled stream, a
  nursery closing or a timeout is a dead or slow peer: the stream is reset
  and the peer dropped, never penalised. Exceptions raised while *we*
  forward an accepted message never cost the peer that sent it.
- py-libp2p writes to a peer's pubsub stream from several tasks at once (the
  per-peer sending loop, the replay of recent messages to a new peer, the
  flush of pending messages): a message over one 64 KiB Yamux frame is then
  interleaved with another and the receiver reads garbage, for which it
  would ban an honest peer. :meth:`._pubsub._GuardedPubsub._write_rpcs` serialises the
  writes of each stream.
- py-libp2p writes each RPC in a yamux frame, a Noise frame and a syscall of
  its own, and a starved node's queue fills with small ones: our sending loop
  (:meth:`._pubsub._GuardedPubsub.handle_sending_messages`) writes whatever is
  queued for a peer at once, the same length-prefixed RPCs in one write.
- Teardown races end the node in py-libp2p: ``_teardown_if_connected``
  deletes ``peers[peer_id]`` after an ``await`` during which the sending
  loop's dead-peer handler may already have deleted it (``KeyError``), and
  scheduling a task on a stopping service raises ``RuntimeError('Nursery is
  closed to new arrivals')`` into the read loop or into ``add_to_blacklist``.
  Every non-daemon task the pubsub service schedules is contained (an
  exception is logged, never propagated into the service), scheduling on a
  stopped service is a no-op, and the teardown paths tolerate a peer that
  is already gone. (GossipSub itself schedules only its heartbeat daemon.)
"""

from depin_p2p.gossip.libp2p.transport import (
    NOISE_PROTOCOL_ID,
    YAMUX_PROTOCOL_ID,
    Libp2pConfig,
    Libp2pTransport,
    libp2p_key_pair,
)

__all__ = ["NOISE_PROTOCOL_ID", "YAMUX_PROTOCOL_ID", "Libp2pConfig", "Libp2pTransport", "libp2p_key_pair"]
