"""Ship a trained rrg model as crrg's bundled default (src/crrg/models/pretrained/crrg-default).

    .venv/bin/python scripts/export_default_model.py /work/runs/rrg5k/joint/model [--version 0.2.0] [--joint filter] [--drop-restatements] [--classifier CLF]
        [--consensus 4] [--normal-impression-from MANIFEST.jsonl] [--sentence-order-from MANIFEST.jsonl]
        [--impression-agreement] [--filter-candidates]

The model folder may be the bundled one itself (to change only its settings).

Stores the weights as float16 (the folder must stay <= 50 MB: 23 MB of generator, 22 MB of attached CLIP classifier), stamps the version into config.json,
and checks that the float16 copy writes the same report as the float32 model on an example study,
with finding probabilities within 1e-2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 50.0
log = logging.getLogger("export_default_model")


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    import torch

    from crrg.image import load_image
    from crrg.models.registry import DEFAULT_MODEL, bundled_models_dir, load_pretrained, save_pretrained
    from crrg.reporting import StudyInput

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="saved rrg model folder (e.g. RUN/language/model)")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--name", default=DEFAULT_MODEL)
    parser.add_argument("--joint", choices=("off", "condition", "rerank", "filter"), default=None,
                        help="the joint mode the bundled model uses by default (measured best on val/test)")
    parser.add_argument("--drop-restatements", action="store_true",
                        help="assemble without sentences that only restate an earlier sentence's findings")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="saved image classifier to ship inside the model (joint design: it decides the findings it knows)")
    parser.add_argument("--consensus", type=int, default=None,
                        help="write each sentence as the consensus of this many beam candidates (crrg.rrg.consensus; 0 = greedy)")
    parser.add_argument("--normal-impression-from", type=Path, default=None,
                        help="manifest whose train split gives the normal IMPRESSION (consensus of its normal impressions)")
    parser.add_argument("--impression-agreement", action="store_true",
                        help="the IMPRESSION is the beam candidate that best restates the FINDINGS (crrg.rrg.joint.agreeing_impression)")
    parser.add_argument("--filter-candidates", action="store_true",
                        help="joint filter: veto a region's candidates before their consensus (decoding.filter_candidates)")
    parser.add_argument("--sentence-order-from", type=Path, default=None,
                        help="manifest whose train split's FINDINGS teach the sentence order (crrg.rrg.ordering)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    model = load_pretrained(args.model)
    model.crrg_config["version"] = args.version
    if args.joint:
        model.decoding = model.decoding.replace(joint=args.joint)  # saved as decoding.json
    if args.drop_restatements:
        model.crrg_config.setdefault("assembly", {})["drop_restatements"] = model.drop_restatements = True
    if args.consensus is not None:
        model.decoding = model.decoding.replace(consensus=args.consensus)
    if args.normal_impression_from:
        from crrg.records import read_manifest
        from crrg.rrg.task import normal_impression

        learned = normal_impression(read_manifest(args.normal_impression_from, split="train"))
        if learned:
            model.crrg_config.setdefault("assembly", {})["normal_impression"] = model.normal_impression = learned
            log.info("normal impression: %s", learned)
    if args.impression_agreement:
        model.decoding = model.decoding.replace(impression="agreement")
    if args.filter_candidates:
        model.decoding = model.decoding.replace(filter_candidates=True)
    if args.sentence_order_from:
        from crrg.records import read_manifest
        from crrg.rrg.ordering import SentenceOrder

        model.sentence_order = SentenceOrder.fit(r.findings for r in read_manifest(args.sentence_order_from, split="train"))
        log.info("sentence order: %d pairwise precedences", len(model.sentence_order.before))
    if args.classifier:
        from crrg.rrg import joint

        joint.attach_classifier(model, joint.load_finding_source(str(args.classifier)))
    out = bundled_models_dir() / args.name
    # overwrites (an attached classifier is saved inside, also in float16); the hand-written MODEL_CARD.md stays
    save_pretrained(model, out, dtype=torch.float16)
    if not (out / "MODEL_CARD.md").is_file():
        log.warning("%s has no MODEL_CARD.md yet: write one before shipping", out)

    study = StudyInput(images=[load_image(ROOT / "examples" / f"heart-failure_{v}.png") for v in ("frontal", "lateral")],
                       views=["PA", "LATERAL"])
    full = model.generate_report(study)
    half = load_pretrained(args.name).generate_report(study)
    diff = max(abs(full.probabilities[k] - half.probabilities[k]) for k in full.probabilities)
    size = folder_mb(out)
    log.info("%s: %.1f MB, version %s; max finding-probability change after float16: %.4f", out, size, args.version, diff)
    log.info("float32 report: %s", full.findings)
    log.info("float16 report: %s", half.findings)
    if size > LIMIT_MB:
        log.error("the bundled model is %.1f MB, over the %.0f MB limit", size, LIMIT_MB)
        return 1
    if diff > 1e-2:
        log.error("float16 weights change the finding probabilities by %.4f", diff)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
