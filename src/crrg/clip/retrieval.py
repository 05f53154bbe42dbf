"""Image -> report retrieval: answer with the report of the most similar training study.

The classic baseline every report generator must beat. A CLIP model with an attached index (saved
as ``retrieval/`` inside its folder) implements ``generate_report`` from :mod:`crrg.reporting`, so
``crrg report --model RUN`` works with it like with any generator.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from crrg.clip.data import load_image, primary_image
from crrg.errors import ConfigError, InputError
from crrg.io import atomic_open, atomic_save_file
from crrg.records import StudyRecord
from crrg.reporting import GeneratedReport, StudyInput, timings

if TYPE_CHECKING:
    from crrg.clip.model import CLIPModel

log = logging.getLogger(__name__)

INDEX_DIR = "retrieval"


@dataclass
class RetrievalIndex:
    embeddings: torch.Tensor  # (N, D), L2-normalised image embeddings of the indexed studies
    reports: list[dict[str, str]]  # {"id", "findings", "impression"} per row

    def __post_init__(self) -> None:
        if self.embeddings.shape[0] != len(self.reports):
            raise ValueError("retrieval index: one report per embedding row is required")

    def __len__(self) -> int:
        return len(self.reports)

    def search(self, query: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities and row indices of the ``k`` nearest studies for each query row."""
        sims = query.to(self.embeddings.device) @ self.embeddings.t()
        return sims.topk(min(k, len(self)), dim=-1)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        out = Path(folder) / INDEX_DIR
        out.mkdir(parents=True, exist_ok=True)
        emb = self.embeddings.detach().cpu().contiguous()
        atomic_save_file(out / "embeddings.safetensors", lambda tmp: save_file({"embeddings": emb}, tmp))
        with atomic_open(out / "reports.jsonl") as handle:
            for r in self.reports:
                handle.write(json.dumps(r, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "RetrievalIndex | None":
        from safetensors.torch import load_file

        src = Path(folder) / INDEX_DIR
        if not (src / "embeddings.safetensors").is_file():
            return None
        emb = load_file(str(src / "embeddings.safetensors"))["embeddings"]
        reports = [json.loads(line) for line in (src / "reports.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        return cls(emb, reports)


def build_index(model: "CLIPModel", records: Sequence[StudyRecord], batch_size: int = 32, progress=None) -> RetrievalIndex:
    """Embed the primary image of every record that has a report; ``progress`` wraps the batch loop."""
    usable = [r for r in records if primary_image(r) and r.report]
    if not usable:
        raise InputError("no study with both an image and a report to index")
    model.eval()
    batches = range(0, len(usable), batch_size)
    chunks = []
    for start in (progress(batches, total=len(batches), description="indexing") if progress else batches):
        part = usable[start:start + batch_size]
        chunks.append(model.embed_images([load_image(primary_image(r)) for r in part]).cpu())
    reports = [{"id": r.id, "findings": r.findings.strip(), "impression": r.impression.strip()} for r in usable]
    return RetrievalIndex(torch.cat(chunks), reports)


def _query_image(study: StudyInput) -> Any:
    return study.images[study.frontal_index(required=False)]


@torch.no_grad()
def generate_report(model: "CLIPModel", study: StudyInput, **options: Any) -> GeneratedReport:
    """The nearest indexed study's report, plus zero-shot finding probabilities for the query image."""
    if model.retrieval is None:
        raise ConfigError("this CLIP model has no retrieval index; build one with `crrg train clip` "
                          "(index_train_reports: true) or crrg.clip.retrieval.build_index")
    from crrg.clip.zeroshot import ZeroShotClassifier

    t0 = time.perf_counter()
    model.eval()
    query = model.embed_images([_query_image(study)])
    t1 = time.perf_counter()
    sims, rows = model.retrieval.search(query.cpu(), k=1)
    best = model.retrieval.reports[int(rows[0, 0])]
    log.debug("retrieved study %s (cosine similarity %.3f)", best.get("id"), float(sims[0, 0]))
    t2 = time.perf_counter()
    zeroshot = getattr(model, "_zeroshot_cache", None)
    if zeroshot is None:
        zeroshot = ZeroShotClassifier.from_prompt_file(model, options.get("prompts"))
        model._zeroshot_cache = zeroshot
    probs = zeroshot.probabilities_from_embeddings(query)[0]
    names = zeroshot.observations
    thresholds = zeroshot.thresholds()
    t3 = time.perf_counter()
    return GeneratedReport(
        findings=best["findings"],
        impression=best["impression"],
        probabilities={n: float(p) for n, p in zip(names, probs)},
        labels={n: int(float(p) >= thresholds[n]) for n, p in zip(names, probs)},
        model=options.get("model_name", "clip-retrieval"),
        timings_ms=timings(t1 - t0, t2 - t1, t3 - t2),
    )
