"""Epoch consensus: one Tendermint instance per epoch (pure core), its signer, its fuzz harness."""
