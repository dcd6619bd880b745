"""`/metrics` of real nodes: types, names, the README's list and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "depin-node.json"
METRIC_NAME = re.compile(r"\b((?:depin|process|python)_[a-z0-9_]+)\b")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created", "_info")


def _scrape(port: int) -> dict[str, Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Metric]]]:
    """Two validators with 1 s epochs, scraped once both committed epoch 3."""
    plan = DevnetPlan(nodes=2, epoch_seconds=1, seed=b"metrics-scrape")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + 4_000)
    layout = write_layout(devnet, tmp_path_factory.mktemp("metrics") / "devnet")
    nodes = [NodeProcess(n) for n in layout.nodes]

    def live_commits(port: int) -> float:
        fam = _scrape(port)["depin_consensus_commit_latency_seconds"]
        return sum(s.value for s in fam.samples if s.name.endswith("_count"))

    async def wait_committed(epoch: int) -> None:
        # Until both committed ``epoch`` and one committed an epoch live (processes that start
        # after the genesis time first commit the epochs they missed in a burst: not timed).
        with trio.fail_after(120):
            while True:
                for n in nodes:
                    assert n.exited is None, n.tail()
                statuses = [await fetch_status(n.layout) for n in nodes]
                done = all(s is not None and int(s.get("last_epoch", 0)) >= epoch for s in statuses)
                if done and any(live_commits(n.layout.api_port) >= 1 for n in nodes):
                    return
                await trio.sleep(0.3)

    try:
        for n in nodes:
            n.start()
        trio.run(wait_until_up, nodes, 60.0)
        trio.run(wait_committed, 3)
        yield [_scrape(n.layout.api_port) for n in nodes]
    finally:
        stop_all(nodes)


def _readme_metrics() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- metrics:begin -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    names = re.findall(r"^\| `([a-z0-9_]+)`", block, flags=re.MULTILINE)
    assert len(names) >= 20, "the README's metrics table is missing or unparsed"
    return names


def _family_of(name: str, families: dict[str, Metric]) -> Metric | None:
    if name in families:
        return families[name]
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return families[name[: -len(suffix)]]
    return None


def test_metrics_are_typed_and_named_by_convention(scrapes: list[dict[str, Metric]]) -> None:
    for families in scrapes:
        for name, fam in families.items():
            assert name.startswith(("depin_", "process_", "python_")), name
            assert "_ms" not in name and not name.endswith("_total"), name
            if fam.type == "counter":
                assert all(s.name == name + "_total" for s in fam.samples if not s.name.endswith("_created"))
            if fam.type == "gauge":
                assert all(s.name == name for s in fam.samples)
        types = {name: fam.type for name, fam in families.items()}
        for name in (
            "depin_consensus_commit_latency_seconds",
            "depin_consensus_commit_round",
            "depin_consensus_step_seconds",
            "depin_proof_check_seconds",
            "depin_gossip_proof_delay_seconds",
        ):
            assert types[name] == "histogram", name
        for name in (
            "depin_peers",
            "depin_epoch_current",
            "depin_epoch_last_committed",
            "depin_proof_pool_pending",
        ):
            assert types[name] == "gauge", name
        for name in (
            "depin_consensus_epochs_committed",
            "depin_gossip_proofs_received",
            "depin_transport_messages",
        ):
            assert types[name] == "counter", name
        assert types["process_cpu_seconds"] == "counter"
        assert types["process_resident_memory_bytes"] == "gauge"
        (build,) = families["depin_build_info"].samples
        assert build.value == 1 and build.labels["version"] and build.labels["network"]

    def count(families: dict[str, Metric], name: str) -> float:
        return sum(s.value for s in families[name].samples if s.name == name + "_count")

    # The measurements are taken, not just declared: each node committed epochs 1..3 live or by sync
    # (the last commit may be in the ledger a moment before its observation), and saw the other's proofs.
    assert all(count(f, "depin_consensus_commit_round") >= 2 for f in scrapes)
    assert any(count(f, "depin_consensus_commit_latency_seconds") >= 1 for f in scrapes)

    def step_count(families: dict[str, Metric], step: str) -> float:
        fam = families["depin_consensus_step_seconds"]
        return sum(
            s.value for s in fam.samples if s.name.endswith("_count") and s.labels["step"] == step
        )

    # Each node signed and committed live, and timed its instance's phases.
    for step in ("sign", "commit", "propose", "prevote_quorum", "precommit_quorum"):
        assert any(step_count(f, step) >= 1 for f in scrapes), step
    assert all(count(f, "depin_proof_check_seconds") >= 1 for f in scrapes)
    assert all(count(f, "depin_gossip_proof_delay_seconds") >= 1 for f in scrapes)
    for families in scrapes:
        (peers,) = families["depin_peers"].samples
        assert peers.value == 1
        (last,) = families["depin_epoch_last_committed"].samples
        assert last.value >= 3


def test_every_metric_in_the_readme_is_exported(scrapes: list[dict[str, Metric]]) -> None:
    documented = _readme_metrics()
    for families in scrapes:
        missing = [n for n in documented if _family_of(n, families) is None]
        assert not missing, f"documented in the README but not exported: {missing}"
    exported = {n for n in scrapes[0] if n.startswith("depin_")}
    undocumented = exported - {f.name for n in documented if (f := _family_of(n, scrapes[0])) is not None}
    assert not undocumented, f"exported but not in the README's table: {sorted(undocumented)}"


def test_every_metric_the_dashboard_queries_exists(scrapes: list[dict[str, Metric]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 10
    names = {m for expr in exprs for m in METRIC_NAME.findall(expr)}
    families = scrapes[0]
    for name in sorted(names):
        fam = _family_of(name, families)
        assert fam is not None, f"the dashboard queries {name}, which the node does not export"
        if name.endswith("_bucket"):
            assert fam.type == "histogram", name
        if name.endswith("_total"):
            assert fam.type == "counter", name
