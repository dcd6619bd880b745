"""``python -m devnet``: the same as the ``depin-devnet`` command."""

from devnet.cli import main

main()
