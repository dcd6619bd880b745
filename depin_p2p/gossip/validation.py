"""Gossip-level checks that run before any subsystem sees a message. [pure]

Each rule is one line, tagged by what it raises (consensus-specs style):

- REJECT ``oversized``: more bytes than the cap.
- REJECT ``malformed``: not a canonical ``Envelope``.
- REJECT ``wrong_network``: signed for another network.
- REJECT ``unexpected_type``: a message type this topic does not carry.
- IGNORE ``too_old`` / ``too_early``: the message's own time field is far
  outside our clock (a caller-provided rule says which field and how far);
  a peer relaying a proof that just aged out is not at fault, so no penalty.
- IGNORE ``far_out_of_window``: the time field is outside the window by more
  than the rule's ``far_ms`` as well (no honest node signs or forwards such a
  proof; the caller may charge the peer per item beyond a tolerance).
- the caller's ``screen`` (e.g. the proof pool's epoch and registry checks):
  whatever it raises, still before the signature.
- REJECT ``wrong_domain`` / ``bad_signature`` / ``bad_public_key``: the
  checks of :func:`depin_p2p.wire.open_envelope`, same codes, body decoded once.

Cheap checks come first; the Ed25519 verification is last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from depin_p2p import wire
from depin_p2p.errors import CodecError, Ignore, Reject

FAR_OUT_OF_WINDOW = "far_out_of_window"  # far ahead: an Ignore code the gossip service charges per item
# Far behind: ignored, remembered and not relayed, but never charged. A message held up in a
# starved sender's queue or a mesh's backlog grows old on its way; it cannot grow younger.
FAR_TOO_OLD = "far_too_old"

# The caller's cheap check of a decoded message and its claimed signer, before the signature.
Screen = Callable[[object, bytes], None]


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Accept a message whose time lies in ``[now - max_age_ms, now + max_future_ms]``.

    ``time_of`` extracts the message's own time in Unix milliseconds. A time
    outside the window by more than ``far_ms`` as well (0: never) is
    ``far_too_old`` when late (a relay delay can do that, so it costs no one), and
    ``far_out_of_window`` when early: beyond any clock skew.
    """

    time_of: Callable[[object], int]
    max_age_ms: int
    max_future_ms: int
    far_ms: int = 0


@dataclass(frozen=True, slots=True)
class GossipRule:
    """How one message type is checked on a topic: its signing domain and an optional time window."""

    domain: wire.Domain
    window: TimeWindow | None = None


def validate_time_window(window: TimeWindow, msg: object, now_ms: int) -> None:
    """Raise Ignore ``too_old`` / ``too_early`` (``far_out_of_window``) when ``msg`` is outside ``window``."""
    at = window.time_of(msg)
    if at < now_ms - window.max_age_ms:
        if window.far_ms and at < now_ms - window.max_age_ms - window.far_ms:
            raise Ignore(FAR_TOO_OLD, f"{now_ms - at} ms old")
        raise Ignore("too_old", f"{now_ms - at} ms old, limit {window.max_age_ms}")
    if at > now_ms + window.max_future_ms:
        if window.far_ms and at > now_ms + window.max_future_ms + window.far_ms:
            raise Ignore(FAR_OUT_OF_WINDOW, f"{at - now_ms} ms ahead")
        raise Ignore("too_early", f"{at - now_ms} ms ahead, limit {window.max_future_ms}")


@dataclass(frozen=True, slots=True)
class Screened:
    """An envelope that passed every gossip check but the signature, and what that check takes."""

    message: object
    envelope: wire.Envelope
    signed: bytes  # the exact bytes the signature must cover

    def item(self) -> tuple[bytes, bytes, bytes]:
        """``(public key, signed bytes, signature)``: the arguments of a :data:`wire.Verifier`."""
        return (self.envelope.signer, self.signed, self.envelope.signature)


def decode_gossip_envelope(
    data: bytes,
    *,
    network_id: str,
    rules: Mapping[int, GossipRule],
    max_size: int = wire.MAX_MESSAGE_BYTES,
) -> Screened:
    """The checks of :func:`validate_gossip_envelope` that depend on the bytes alone (no clock, no screen).

    Raises:
        Reject: oversized, malformed, wrong_network, unexpected_type, wrong_domain.
    """
    if len(data) > max_size:
        raise Reject("oversized", f"{len(data)} bytes > {max_size}")
    try:
        env = wire.decode_as(data, wire.Envelope, max_size)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    if env.network_id != network_id:
        raise Reject("wrong_network", f"envelope for {env.network_id!r}")
    # The body is decoded once and the checks of wire.open_envelope are
    # repeated here in the cheap-first order: decoding is most of the CPU a
    # proof costs us after the signature, and proofs come by the hundred.
    try:
        msg = wire.decode(env.body, max_size)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    info = wire.info_of(type(msg))
    rule = rules.get(info.type_id)
    if rule is None:
        raise Reject("unexpected_type", f"type {info.type_id} is not carried here")
    if info.domain is not rule.domain:
        raise Reject("wrong_domain", f"{info.cls.__name__} is not signed as {rule.domain.value}")
    return Screened(msg, env, wire.signing_bytes(network_id, rule.domain, info.type_id, env.body))


def screen_gossip_envelope(
    decoded: Screened,
    *,
    rules: Mapping[int, GossipRule],
    now_ms: int,
    screen: Screen | None = None,
) -> None:
    """The time window and the caller's screen of a decoded envelope (what they raise passes through)."""
    rule = rules[wire.info_of(type(decoded.message)).type_id]
    if rule.window is not None:
        validate_time_window(rule.window, decoded.message, now_ms)
    if screen is not None:
        screen(decoded.message, decoded.envelope.signer)


def validate_gossip_envelope(
    data: bytes,
    *,
    network_id: str,
    rules: Mapping[int, GossipRule],
    now_ms: int,
    max_size: int = wire.MAX_MESSAGE_BYTES,
    verify: wire.Verifier = wire.verify_signature,
    screen: Screen | None = None,
    decoded: Screened | None = None,
) -> wire.Verified:
    """Check one signed envelope from gossip and return it verified.

    Args:
        data: the encoded ``Envelope``.
        network_id: our network; anything else is rejected.
        rules: the message types allowed here, by type id.
        now_ms: local time, for time windows only.
        max_size: byte cap of ``data``.
        verify: the signature check (the node's :class:`~depin_p2p.wire.SignatureCache`).
        screen: the caller's cheap checks of the message and its signer, run
            before the signature (what it raises passes through).
        decoded: :func:`decode_gossip_envelope` of these very bytes, already done (not repeated).

    Raises:
        Reject: oversized, malformed, wrong_network, unexpected_type,
            wrong_domain, bad_signature, bad_public_key.
        Ignore: too_old, too_early, far_out_of_window.
    """
    if decoded is None:
        decoded = decode_gossip_envelope(data, network_id=network_id, rules=rules, max_size=max_size)
    screen_gossip_envelope(decoded, rules=rules, now_ms=now_ms, screen=screen)
    env = decoded.envelope
    verify(env.signer, decoded.signed, env.signature)
    return wire.Verified(decoded.message, env.signer, env)
