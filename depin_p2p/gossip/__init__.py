"""Gossip: the transport interface, its memory and libp2p implementations, and the proof service."""
