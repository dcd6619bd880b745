"""The scenario report: canonical JSON bytes, and an HTML page whose plots really render."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from devnet.invariants import check_all
from devnet.manifest import parse_manifest
from devnet.report import build_report, report_json, write_report
from tests.unit.devnet.test_invariants import clean_run
from tests.unit.devnet.test_manifest import GOOD


def test_the_report_is_canonical_and_carries_every_verdict(tmp_path: Path) -> None:
    manifest = parse_manifest(GOOD)
    run = clean_run()
    doc = build_report(manifest, 7, run, check_all(run))
    assert report_json(doc) == report_json(build_report(manifest, 7, run, check_all(run)))
    assert report_json(doc) != report_json(build_report(manifest, 8, run, check_all(run)))
    assert set(doc["invariants"]) >= {"agreement", "liveness", "supply"}
    assert doc["ok"] is True
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert doc["epochs"][0]["commit_latency_ms_median"] == 500


def test_a_failed_invariant_shows_in_the_report() -> None:
    manifest = parse_manifest(GOOD)
    run = replace(clean_run(), rejected_proofs=frozenset({"proof2"}))
    doc = build_report(manifest, 7, run, check_all(run))
    assert doc["ok"] is False
    assert doc["invariants"]["rewards_for_accepted_proofs"]["ok"] is False


def test_the_html_page_holds_five_rendered_plots(tmp_path: Path) -> None:
    import matplotlib.image  # noqa: PLC0415

    manifest = parse_manifest(GOOD)
    run = replace(
        clean_run(),
        peer_samples=tuple((t * 1000, n, 3) for t in range(0, 60, 5) for n in range(4)),
        proof_verdicts=((1, "accepted", 30), (2, "accepted", 28), (2, "too_far", 2)),
    )
    json_path, html_path = write_report(
        tmp_path / "out", build_report(manifest, 7, run, check_all(run)), run, manifest
    )
    assert json_path.read_bytes().startswith(b"{")
    page = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    for data in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[:2] == (360, 640)
        assert float(np.std(pixels)) > 0.01  # not a blank canvas
