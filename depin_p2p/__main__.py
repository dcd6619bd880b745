"""``python -m depin_p2p``: the same as the ``depin-p2p`` command."""

from depin_p2p.cli import main

main()
