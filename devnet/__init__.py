"""depin-p2p devnet tooling (built on the depin_p2p library)."""
