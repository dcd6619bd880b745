"""Shared fixtures. Imports every project module so the wire registry is complete."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup``, which process tests may share the machine.

    The slow network tests start node processes, namespaces and sockets whose
    timing (epochs of 2-5 s, ping timeouts, a CPU hog) assumes no second
    devnet beside them: they form one group, run in order by one xdist worker.
    The other worker runs the in-process unit and simulator tests, and the
    shipped manifests on processes (``test_run_manifests.py``: one light
    4-5 node run at a time, 3 s epochs), beside it. Without ``-n`` the groups
    do nothing.
    """
    del config
    for item in items:
        parts = item.path.parts
        if not item.get_closest_marker("slow") or not ("integration" in parts or "adversarial" in parts):
            continue
        group = "manifests" if item.path.name == "test_run_manifests.py" else "processes"
        item.add_marker(pytest.mark.xdist_group(group))
