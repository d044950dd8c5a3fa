"""Markdown tables of bench/results/generative.json for the README (the README's tables are
this script's output, pasted).

Usage: .venv/bin/python bench/tables.py [bench/results/generative.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import RESULTS

STHGCN = "sthgcn_nyc"


def cell(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci95", (None, None))
    interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{m[key]:.3f}{interval}"


def rows_of(entry: dict) -> list[tuple[str, dict]]:
    rows = [(f"floor {name}", m) for name, m in entry["floors"].items()]
    for kind in ("tiger", "onerec"):
        for suffix, label in (("", "model alone"), ("_history", "+ history-aware re-ranking")):
            for variant, m in entry.get(f"{kind}{suffix}", {}).items():
                rows.append((f"{kind} {variant} ({label})", m))
    rows += [(f"ablation {name}", m) for name, m in entry.get("ablations", {}).items()]
    return rows


def table(entry: dict, metrics: tuple[str, ...], interval: str) -> str:
    head = [f"{m} (95% CI)" if m == interval else m for m in metrics]
    lines = [
        "| model | seeds | " + " | ".join(head) + f" | {interval} minus floor (b), "
        "paired (95% CI) |",
        "|---|---:|" + "---:|" * (len(metrics) + 1),
    ]
    for name, m in rows_of(entry):
        diff = m.get("vs_floor_b")
        paired = (
            f"{diff['mean']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]" if diff else ""
        )
        lines.append(
            f"| {name} | {m['seeds']} | "
            + " | ".join(cell(m, k) if k == interval else f"{m[k]:.3f}" for k in metrics)
            + f" | {paired} |"
        )
    served = entry.get("served")
    if served is None:
        return "\n".join(lines)
    lines.append(
        f"\nServed (`user_topk_cache`): {served['model']}, {interval} "
        f"{cell(served, interval)}; gate: {served['gate']['reason']}."
    )
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "generative.json"
    data = json.loads(path.read_text())
    for city, entry in data["cities"].items():
        print(f"\n#### {city} ({entry['examples']['test']} test examples)\n")
        print(table(entry, ("hit@5", "hit@10", "ndcg@5", "ndcg@10"), "hit@10"))
    if STHGCN in data:
        entry = data[STHGCN]
        print(f"\n#### {STHGCN} ({entry['examples']['test']} test targets, STHGCN protocol)\n")
        print(table(entry, ("acc@1", "acc@5", "acc@10", "mrr"), "acc@10"))
        published = entry["published"]["sthgcn"]
        print(
            f"\nPublished STHGCN: Acc@1 {published['acc@1']}, Acc@5 {published['acc@5']}, "
            f"Acc@10 {published['acc@10']}, MRR {published['mrr']} ({published['note']})."
        )


if __name__ == "__main__":
    main()
