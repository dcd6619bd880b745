"""The ledger: pure state transition and Merkle tree, LMDB store, genesis."""
