"""Shared fixtures. Imports every project module so the wire registry is complete."""

from __future__ import annotations

import importlib
import pkgutil

from hypothesis import settings

import depin_p2p

# Timing deadlines are noise on a shared 2-core CI machine; speed lives in bench/.
settings.register_profile("depin", deadline=None, print_blob=True)
settings.load_profile("depin")


def import_all_modules() -> list[str]:
    """Import every depin_p2p module (libp2p adapter included) and return their names."""
    names = []
    for info in pkgutil.walk_packages(depin_p2p.__path__, prefix="depin_p2p."):
        if info.name.endswith("__main__"):
            continue  # running it would run the CLI
        importlib.import_module(info.name)
        names.append(info.name)
    return names


import_all_modules()
