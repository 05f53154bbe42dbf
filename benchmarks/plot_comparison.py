"""One figure comparing report generators and baselines on the same test split (for the README).

    python benchmarks/plot_comparison.py --out docs/images/model_comparison.png \\
        --entry "crrg-default 0.3.0 (joint=filter)=benchmarks/results/rrg_synth5k.json:rrg_joint_filter" \\
        --entry "most frequent report=benchmarks/results/rrg_synth5k.json:baseline_most_frequent" ...

Each entry is ``LABEL=RESULT_JSON:KEY.PATH`` where the dotted key path leads to a dict of
``crrg evaluate`` metrics inside the JSON file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = ["bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_micro5_f1", "ce_example14_f1"]
NAMES = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CE micro-5 F1", "CE ex-14 F1"]


def load_entry(spec: str) -> tuple[str, dict]:
    label, rest = spec.rsplit("=", 1)  # labels may contain "="; paths rarely do
    path, key = rest.rsplit(":", 1)
    node = json.loads(Path(path).read_text())
    for part in key.split("."):
        node = node[part]
    return label, node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entry", action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="Report generation on the synthetic test split")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from crrg.io import atomic_save_file

    entries = [load_entry(spec) for spec in args.entry]
    x = np.arange(len(METRICS))
    width = 0.8 / len(entries)
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=120)
    for i, (label, metrics) in enumerate(entries):
        values = [float(metrics.get(m, float("nan"))) for m in METRICS]
        ax.bar(x + (i - (len(entries) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, NAMES)
    ax.set_ylabel("score")
    ax.set_title(args.title)
    ax.grid(axis="y", alpha=0.3)
    top = max(float(m.get(k, 0.0)) for _, m in entries for k in METRICS)
    ax.set_ylim(0, max(1.0, top) * 1.2)  # room above the bars for the legend
    ax.legend(fontsize=8, ncols=min(len(entries), 4), loc="upper left")
    fig.tight_layout()
    atomic_save_file(args.out, lambda tmp: fig.savefig(tmp))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
