"""Attach a real-film finding classifier to an rrg model folder as its ``real_finding_classifier``.

    python scripts/attach_real_classifier.py MODEL_DIR CLASSIFIER_DIR

Both folders are read with :func:`crrg.models.load_pretrained` and the model is written back with
:func:`crrg.models.save_pretrained`, so the child lands in ``MODEL_DIR/classifier_real/`` and in
config.json's ``children`` and ``files`` exactly as a trained model would have it. The model's weights
are written in the dtype they were stored in (crrg-default: float16), so nothing else changes. What the
child does: a film the OOD score calls unreliable takes its finding probabilities from it
(``crrg.rrg.model.RRGModel.finding_source_for``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("attach_real_classifier")


def stored_dtype(folder: Path):
    """The floating-point dtype of a folder's model.safetensors (None: float32 or nothing floating)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        kinds = {f.get_slice(k).get_dtype() for k in f.keys()}
    for name, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16)):
        if name in kinds:
            return dtype
    return None


def attach(model_dir: str | Path, classifier_dir: str | Path) -> Path:
    from crrg.errors import ConfigError
    from crrg.models import load_pretrained, save_pretrained
    from crrg.rrg.joint import as_finding_source

    model_dir = Path(model_dir)
    model = load_pretrained(model_dir)
    if not hasattr(model, "real_finding_classifier"):
        raise ConfigError(f"{model_dir} is not an rrg model folder; pass the folder of a region-guided model")
    classifier = load_pretrained(classifier_dir).requires_grad_(False).eval()
    as_finding_source(classifier)  # fails now, with one line, if it gives no finding probabilities
    model.real_finding_classifier = classifier
    out = save_pretrained(model, model_dir, dtype=stored_dtype(model_dir))
    log.info("attached %s to %s as classifier_real/", classifier_dir, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="an rrg model folder (e.g. src/crrg/models/pretrained/crrg-default)")
    parser.add_argument("classifier_dir", help="a saved classifier folder (family classifier)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    attach(args.model_dir, args.classifier_dir)


if __name__ == "__main__":
    main()
