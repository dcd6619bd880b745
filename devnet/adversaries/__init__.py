"""Adversaries: an honest node with one behaviour replaced, one module per family.

Each module gives the simulator its behaviour and, where it runs on
processes, an entry point ``python -m devnet.adversaries.<module>`` that
``depin-devnet run`` starts instead of ``depin-p2p run`` for that node. The
node's own code (``depin_p2p``) has no switch for any of them.
"""
