"""The scenario report's HTML page in a real browser: headless Chromium (Debian's package) renders every plot.

The unit test decodes the page's PNGs with matplotlib; this one asks the
browser. One Chromium run loads the page with a probe script added and
writes, for every image, whether it decoded, its natural size and where it
sits on the page; a second run of the unchanged page takes a screenshot.
Each plot's rectangle in the screenshot must be the plot itself: the size
the report draws (640 x 360), not blank, and the same pixels as the PNG in
the page. Chromium gets only ``file://`` pages and a host resolver that
resolves nothing, so it sends no traffic anywhere.

Skipped, with the reason, where Chromium is not installed (`apt-get install
chromium`; CI installs it).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from devnet.invariants import check_all
from devnet.manifest import parse_manifest
from devnet.report import build_report, write_report
from tests.unit.devnet.test_invariants import clean_run
from tests.unit.devnet.test_manifest import GOOD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1400, 2400
PLOT = (640, 360)  # what devnet/report.py draws: 6.4 x 3.6 in at 100 dpi

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)

PROBE = """<script>
window.addEventListener("load", () => {
  const rows = [...document.images].map((img) => {
    const r = img.getBoundingClientRect();
    return {complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
            x: Math.round(r.left + window.scrollX), y: Math.round(r.top + window.scrollY)};
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(rows);
  document.body.appendChild(out);
});
</script>"""


def _chromium(page: Path, *extra: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # we run as root here and in CI
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_every_plot_of_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image  # noqa: PLC0415

    manifest = parse_manifest(GOOD)
    run = replace(
        clean_run(),
        peer_samples=tuple((t * 1000, n, 3) for t in range(0, 60, 5) for n in range(4)),
        proof_verdicts=((1, "accepted", 30), (2, "accepted", 28), (2, "too_far", 2)),
    )
    _, page = write_report(tmp_path / "out", build_report(manifest, 7, run, check_all(run)), run, manifest)
    html = page.read_text()
    pngs = [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    assert len(pngs) == 5

    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"))
    dumped = _chromium(probe_page, "--dump-dom", profile=tmp_path / "profile-probe")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, dumped.stdout[-2000:]
    rows = json.loads(found.group(1).replace("&quot;", '"'))
    assert [(r["complete"], r["w"], r["h"]) for r in rows] == [(True, *PLOT)] * 5

    shot = tmp_path / "shot.png"
    taken = _chromium(page, f"--screenshot={shot}", profile=tmp_path / "profile-shot")
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    pixels = matplotlib.image.imread(str(shot))[:, :, :3]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)

    w, h = PLOT
    for row, png in zip(rows, pngs, strict=True):
        x, y = row["x"], row["y"]
        assert x + w <= WIDTH and y + h <= HEIGHT, f"plot at {x},{y} is off the screenshot"
        crop = pixels[y : y + h, x : x + w]
        assert float(np.std(crop)) > 0.01  # not a blank rectangle
        drawn = matplotlib.image.imread(io.BytesIO(png), format="png")[:, :, :3]
        assert float(np.mean(np.abs(crop - drawn))) < 0.02  # the browser shows the plot's own pixels
    page_only = pixels.copy()
    for row in rows:
        page_only[row["y"] : row["y"] + h, row["x"] : row["x"] + w] = 1.0
    assert float(np.std(page_only)) < float(np.std(pixels))  # the plots are what fills the page
