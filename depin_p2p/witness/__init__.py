"""Witness core: radio proof of coverage, compute challenges, assignment, rewards.

Pure modules: ``radio``, ``compute``, ``assign``, ``rewards``, ``world``.
``devices`` is the shell side (device drivers, may use trio).
"""
