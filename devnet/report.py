"""A scenario's report: ``report.json`` (byte-identical for one manifest and seed) and ``report.html``.

The JSON holds the manifest's name and seed, the invariants' verdicts under a
top-level ``invariants`` map (name -> ``{"ok": bool, "detail": str}``), and
per epoch what the honest nodes committed (certificate, round, commit
latency, supply, emission, slashed, rewards). It carries no wall-clock time
and no paths, so two runs of one manifest and seed in the simulator give the
same bytes.

The HTML page is self-contained (PNG plots made with matplotlib, inlined as
data URIs): commit latency per epoch, round reached per epoch, proofs
accepted and rejected by code per epoch, rewards per owner, connected peers
per node over time; every time axis marks the perturbations.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from devnet.invariants import RunRecord, Verdict
from devnet.manifest import Manifest

REPORT_VERSION = 1


def build_report(
    manifest: Manifest, seed: int, run: RunRecord, verdicts: dict[str, Verdict]
) -> dict[str, Any]:
    """The report document: deterministic in (manifest, seed, run)."""
    honest = [n for n in run.nodes if n.honest]
    epochs: dict[int, dict[str, Any]] = {}
    for n in honest:
        for e in n.epochs:
            row = epochs.setdefault(
                e.epoch,
                {
                    "certificates": {},
                    "rounds": [],
                    "latency_ms": [],
                    "supply_after": e.supply_after,
                    "emission": e.emission,
                    "slashed": e.slashed,
                    "rewards": dict(e.rewards),
                },
            )
            row["certificates"][str(n.node)] = e.cert_hash
            row["rounds"].append(e.round)
            row["latency_ms"].append(e.committed_at_ms - e.epoch * run.epoch_length_ms)
    per_epoch = []
    for epoch in sorted(epochs):
        row = epochs[epoch]
        per_epoch.append(
            {
                "epoch": epoch,
                "certificates": dict(sorted(row["certificates"].items())),
                "round_max": max(row["rounds"]),
                "commit_latency_ms_median": int(statistics.median(row["latency_ms"])),
                "supply_after": row["supply_after"],
                "emission": row["emission"],
                "slashed": row["slashed"],
                "rewards": dict(sorted(row["rewards"].items())),
            }
        )
    return {
        "report_version": REPORT_VERSION,
        "manifest": manifest.name,
        "seed": seed,
        "nodes": manifest.network.nodes,
        "validators": manifest.network.validators,
        "epochs_planned": manifest.network.epochs,
        "epoch_seconds": manifest.network.epoch_seconds,
        "invariants": {name: v.as_json() for name, v in verdicts.items()},
        "ok": all(v.ok for v in verdicts.values()),
        "perturbations": [
            {
                "at_epoch": p.at_epoch,
                "action": p.action,
                "node": p.node,
                "groups": [list(g) for g in p.groups],
            }
            for p in manifest.perturbations
        ],
        "adversaries": [
            {"role": a.role, "node": a.node, "from_epoch": a.from_epoch} for a in manifest.adversaries
        ],
        "epochs": per_epoch,
        "attacks": attack_rows(run, verdicts),
        "proof_verdicts": [list(v) for v in sorted(run.proof_verdicts)],
    }


def attack_rows(run: RunRecord, verdicts: dict[str, Verdict]) -> list[dict[str, Any]]:
    """The adversary table: per adversary what it did, what caught it, how fast, what it cost it.

    A row is ``detected`` only when an honest node's own records show one of its role's codes;
    ``invariants_ok`` is the run's verdict (every invariant), the same for every row of a run.
    """
    ok = all(v.ok for v in verdicts.values())
    return [dict(row, invariants_ok=ok) for row in run.attacks]


def report_json(doc: dict[str, Any]) -> bytes:
    """Canonical bytes of the report document (sorted keys, fixed separators, trailing newline)."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_report(out: Path, doc: dict[str, Any], run: RunRecord, manifest: Manifest) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.html``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_bytes(report_json(doc))
    html_path = out / "report.html"
    html_path.write_text(render_html(doc, run, manifest))
    return json_path, html_path


# ------------------------------------------------------------------- HTML


def render_html(doc: dict[str, Any], run: RunRecord, manifest: Manifest) -> str:
    plots = _plots(doc, run, manifest)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class={'ok' if v['ok'] else 'fail'}>"
        f"{'pass' if v['ok'] else 'FAIL'}</td><td>{html.escape(str(v['detail']))}</td></tr>"
        for name, v in doc["invariants"].items()
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in plots
    )
    title = f"{doc['manifest']} · seed {doc['seed']} · {doc['nodes']} nodes"
    verdict_class = "ok" if doc["ok"] else "fail"
    verdict = "all invariants hold" if doc["ok"] else "FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; }}
.ok {{ color: #187318; }} .fail {{ color: #b00020; font-weight: bold; }}
figure {{ display: inline-block; margin: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Verdict: <b class={verdict_class}>{verdict}</b></p>
<table><tr><th>invariant</th><th></th><th>detail</th></tr>{rows}</table>
{_attack_table(doc)}
{figures}
</body></html>
"""


def _attack_table(doc: dict[str, Any]) -> str:
    rows = doc.get("attacks", [])
    if not rows:
        return ""

    def cell(ok: bool, text: str) -> str:
        return f"<td class={'ok' if ok else 'fail'}>{html.escape(text)}</td>"

    body = "".join(
        f"<tr><td>{html.escape(r['role'])}</td><td>{html.escape(r['family'])}</td><td>{r['node']}</td>"
        f"<td>{html.escape(json.dumps(r['did']))}</td>"
        + cell(r["detected"], ", ".join(r["detection_codes"]) or "NOT DETECTED")
        + f"<td>{r['time_to_detect_ms']}</td><td>{html.escape(json.dumps(r['penalty']))}</td>"
        + cell(r["invariants_ok"], "yes" if r["invariants_ok"] else "NO")
        + "</tr>"
        for r in rows
    )
    head = (
        "<tr><th>role</th><th>family</th><th>node</th><th>did</th><th>detected by</th>"
        "<th>time to detect (ms)</th><th>penalty</th><th>invariants ok</th></tr>"
    )
    return f"<h2>Adversaries</h2><table>{head}{body}</table>"


def _plots(doc: dict[str, Any], run: RunRecord, manifest: Manifest) -> list[tuple[str, str]]:
    import matplotlib  # noqa: PLC0415  (heavy; only when a report is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    epoch_s = run.epoch_length_ms / 1000
    marks = [(p.at_epoch, p.action) for p in manifest.perturbations]
    rows = doc["epochs"]
    xs = [r["epoch"] for r in rows]
    out: list[tuple[str, str]] = []

    def figure(title: str, draw: Any, *, x_in_seconds: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        draw(ax)
        for at, action in marks:
            # A perturbation at epoch E happens as E starts: while epoch E-1's instance decides.
            x = (at - 1) * epoch_s if x_in_seconds else at - 1
            ax.axvline(x, color="#b00020", linestyle="--", linewidth=1)
            ax.annotate(action, (x, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, va="top")
        ax.set_title(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        plt.close(fig)
        out.append((title, base64.b64encode(buf.getvalue()).decode()))

    figure(
        "commit latency per epoch (ms, median over honest nodes)",
        lambda ax: (
            ax.plot(xs, [r["commit_latency_ms_median"] for r in rows], marker="o"),
            ax.set_xlabel("epoch"),
        ),
    )
    figure(
        "round reached per epoch",
        lambda ax: (ax.step(xs, [r["round_max"] for r in rows], where="mid"), ax.set_xlabel("epoch")),
    )

    def proofs(ax: Any) -> None:
        codes = sorted({code for _, code, _ in run.proof_verdicts})
        for code in codes:
            per = {e: n for e, c, n in run.proof_verdicts if c == code}
            ax.plot(sorted(per), [per[e] for e in sorted(per)], marker=".", label=code)
        if codes:
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")

    figure("proofs accepted and rejected by code per epoch", proofs)

    def rewards(ax: Any) -> None:
        totals: dict[str, int] = {}
        for r in rows:
            for owner, amount in r["rewards"].items():
                totals[owner] = totals.get(owner, 0) + amount
        owners = sorted(totals)
        ax.bar(range(len(owners)), [totals[o] / 1_000_000 for o in owners])
        ax.set_xticks(range(len(owners)), [o[:8] for o in owners], rotation=45, fontsize=7)
        ax.set_ylabel("tokens")

    figure("rewards per owner (tokens, whole run)", rewards)

    def peers(ax: Any) -> None:
        for node in sorted({n for _, n, _ in run.peer_samples}):
            pts = sorted((t, p) for t, n, p in run.peer_samples if n == node)
            ax.plot([t / 1000 for t, _ in pts], [p for _, p in pts], label=f"node {node}")
        if run.peer_samples:
            ax.legend(fontsize=6, ncol=4)
        ax.set_xlabel("seconds since genesis")

    figure("connected peers per node", peers, x_in_seconds=True)
    return out
