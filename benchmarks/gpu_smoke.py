"""GPU smoke benchmark: train each model family a few hundred steps at full published size, time reports.

Runs from the repository root on a machine with one NVIDIA GPU and only PyTorch, torchvision,
transformers, peft, lightning, timm, numpy, pillow and pandas (no hub, no PyPI: crrg is imported from
``src/`` and only modules that need nothing else; the data are synthetic, made here):

    python benchmarks/gpu_smoke.py                  # CUDA: full size, bf16 autocast; about 3-5 minutes
    python benchmarks/gpu_smoke.py --tiny --steps 3 # any machine (automatic without CUDA): tiny sizes
    python benchmarks/gpu_smoke.py --full --steps 2 --batch 2 --no-latency   # full-size training speed on a CPU

Families, at the sizes of the published systems:

* ``detector``: RGRG's region detector, torchvision Faster R-CNN with a ResNet-50 FPN at 512 px,
  29 region classes (random init; RGRG starts from ImageNet), on 512 px images with 29 boxes each;
* ``decoder``: RGRG's GPT-2 medium (24 layers, 1024 wide, 50,257 tokens; random init) as crrg's region
  decoder, one region feature prefix per sentence of 48 tokens;
* ``clinicalblip``: ClinicalBLIP with InstructBLIP's bridge (BERT-base-size Q-Former, 32 queries,
  cross-attention every 2nd layer) on a ResNet-18 image tower at 224 px (two views) and a small
  stand-in LM (6-layer GPT-2, 512 wide).

Measured per family: training throughput (images / s; sentences / s for the decoder), median step
time, peak GPU memory (peak process RSS on CPU), and report latency p50 / p95 at batch 1 and 32:
detector + 6 region sentences of 40 greedy tokens per image for the region-guided generator,
120 greedy tokens for ClinicalBLIP. One table on stdout and ``benchmarks/results/gpu_smoke_<device>.md``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # crrg from the checkout, not an installed copy
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import median, percentile, print_table, save_results  # noqa: E402

NUM_REGIONS = 29


@dataclass
class Sizes:
    image: int
    detector_backbone: str
    detector_batch: int
    decoder: dict
    decoder_batch: int
    sentence_tokens: int
    blip: dict
    blip_batch: int
    report_regions: int
    region_tokens: int
    blip_tokens: int
    latency_repeats: tuple[int, int]


FULL = Sizes(image=512, detector_backbone="resnet50_fpn", detector_batch=8,
             decoder={"vocab_size": 50257, "n_layer": 24, "n_embd": 1024, "n_head": 16, "n_positions": 1024},
             decoder_batch=32, sentence_tokens=48,
             blip={"image_size": 224, "vision": {"type": "resnet18"},
                   "qformer": {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072,
                               "num_query_tokens": 32, "cross_attention_frequency": 2, "dropout": 0.1},
                   "lm": {"n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 512}},
             blip_batch=16, report_regions=6, region_tokens=40, blip_tokens=120, latency_repeats=(20, 10))
TINY = Sizes(image=64, detector_backbone="mobilenet_v3_large_fpn", detector_batch=2,
             decoder={"vocab_size": 300, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64},
             decoder_batch=4, sentence_tokens=12,
             blip={"image_size": 32, "vision": {"type": "vit", "hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 16,
                                                "intermediate_size": 64},
                   "qformer": {"hidden_size": 32, "layers": 2, "heads": 2, "intermediate_size": 64, "num_query_tokens": 4,
                               "cross_attention_frequency": 2, "dropout": 0.0},
                   "lm": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
             blip_batch=2, report_regions=2, region_tokens=4, blip_tokens=4, latency_repeats=(2, 2))

TEXTS = ["The lungs are clear.", "There is a small left pleural effusion.", "The heart is mildly enlarged.",
         "No pneumothorax.", "Patchy opacity at the right base may reflect atelectasis.", "Mild pulmonary edema.",
         "The cardiomediastinal silhouette is within normal limits.", "Degenerative changes of the spine."] * 8


class Run:
    """Device, autocast and the clock: CUDA work is synchronised before every reading."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.bf16 = self.cuda and torch.cuda.is_bf16_supported()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16) if self.cuda else torch.autocast("cpu", enabled=False)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 1024 ** 3
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def region_boxes(size: int) -> torch.Tensor:
    """29 plausible region boxes on a size x size image (a coarse chest layout)."""
    boxes = []
    for k in range(NUM_REGIONS):
        col, row = k % 6, k // 6
        x1, y1 = 0.05 + 0.15 * col, 0.05 + 0.18 * row
        boxes.append([x1, y1, x1 + 0.2, y1 + 0.22])
    return torch.tensor(boxes).clamp(0, 1) * size


def images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Gray 'radiographs' as the detector's (n, 3, size, size) input."""
    base = torch.rand(n, 1, size, size, generator=generator) * 0.2 + 0.4
    return base.expand(n, 3, size, size).contiguous()


def train_loop(run: Run, model: torch.nn.Module, step, steps: int, per_step: int, lr: float = 1e-4) -> dict:
    """``steps`` optimizer steps of ``step() -> loss`` after untimed warm-up steps (3 on CUDA, 1 on CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, fused=run.cuda)
    model.train()
    run.reset_memory()
    times = []
    warmup = 3 if run.cuda else 1
    for i in range(steps + warmup):
        start = run.now()
        with run.autocast():
            loss = step()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(run.now() - start)
    if not torch.isfinite(loss.detach()).item():
        raise RuntimeError(f"non-finite loss {loss.item()} in {type(model).__name__}")
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "steps": steps,
            "per_s": per_step / median(times), "step_ms": 1e3 * median(times), "peak_gb": run.peak_gb(),
            "loss": float(loss.detach())}


def latency(run: Run, fn, repeats: int) -> tuple[float, float]:
    if repeats == 0:
        return float("nan"), float("nan")
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = run.now()
        fn()
        times.append(run.now() - start)
    return 1e3 * median(times), 1e3 * percentile(times, 0.95)


def region_guided(run: Run, sizes: Sizes, steps: int) -> list[dict]:
    from crrg.rrg.detector import DetectorConfig, RegionDetector
    from crrg.rrg.language import LanguageConfig, RegionLanguageModel

    gen = torch.Generator().manual_seed(0)
    detector = RegionDetector(DetectorConfig(backbone=sizes.detector_backbone, image_size=sizes.image)).to(run.device)
    boxes = region_boxes(sizes.image)
    labels = torch.arange(1, NUM_REGIONS + 1)

    def detector_step():
        batch = images(sizes.detector_batch, sizes.image, gen).to(run.device)
        targets = [{"boxes": (boxes + torch.rand(NUM_REGIONS, 4, generator=gen) * 4).to(run.device), "labels": labels.to(run.device)}
                   for _ in range(sizes.detector_batch)]
        losses = detector.losses(list(batch), targets)
        return sum(losses.values()) if isinstance(losses, dict) else losses

    det = train_loop(run, detector, detector_step, steps, sizes.detector_batch, lr=1e-4)

    width = detector.feature_size
    decoder = RegionLanguageModel(LanguageConfig(**sizes.decoder, max_new_tokens=sizes.region_tokens, dropout=0.1),
                                  feature_width=width).to(run.device)
    vocab = sizes.decoder["vocab_size"]

    def decoder_step():
        feats = torch.randn(sizes.decoder_batch, width, generator=gen).to(run.device)
        ids = torch.randint(3, vocab, (sizes.decoder_batch, sizes.sentence_tokens), generator=gen).to(run.device)
        return decoder.conditioned_loss(feats, ids, torch.ones_like(ids))

    dec = train_loop(run, decoder, decoder_step, steps, sizes.decoder_batch, lr=5e-5)

    detector.eval()
    decoder.eval()
    decoder.gpt2.generation_config.eos_token_id = None  # random weights: write every token, a worst case

    def report(n: int):
        def fn():
            with torch.no_grad(), run.autocast():
                found = detector.detect(list(images(n, sizes.image, gen).to(run.device)))
                feats = torch.cat([d.features[: sizes.report_regions] for d in found])
                decoder.generate(feats.float() if not run.bf16 else feats, max_new_tokens=sizes.region_tokens)
        return fn

    run.reset_memory()
    b1 = latency(run, report(1), sizes.latency_repeats[0])
    b32 = latency(run, report(32), sizes.latency_repeats[1])
    det.update(latency_b1=b1, latency_b32=b32, report_peak_gb=run.peak_gb())
    dec.update(latency_b1=b1, latency_b32=b32)
    return [{"family": f"detector ({sizes.detector_backbone}, {sizes.image} px)", "unit": "images/s", **det},
            {"family": f"decoder (GPT-2 {sizes.decoder['n_layer']}x{sizes.decoder['n_embd']})", "unit": "sentences/s", **dec}]


def clinical_blip(run: Run, sizes: Sizes, steps: int) -> dict:
    from crrg.blip.model import ClinicalBlip
    from crrg.text.tokenizer import TokenizerConfig, train_tokenizer

    tokenizer = train_tokenizer(TEXTS + ["Indication: cough. Likely findings: effusion. Write the report."],
                                TokenizerConfig(vocab_size=500, lowercase=False, add_bos_eos=False))
    lm = {"config": {"model_type": "gpt2", "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **sizes.blip["lm"]}}
    config = {"family": "blip", "image_size": sizes.blip["image_size"], "max_images": 2, "max_report_tokens": 96,
              "vision": sizes.blip["vision"], "qformer": sizes.blip["qformer"], "lm": lm, "soft_prompt_tokens": 4,
              "itc_weight": 0.5, "lora": {"lm": {"r": 8, "alpha": 16, "dropout": 0.05}},
              "generation": {"max_new_tokens": sizes.blip_tokens}}
    model = ClinicalBlip(config)
    model.set_tokenizer(tokenizer)
    model.lm.generation_config.eos_token_id = None
    model.to(run.device)
    gen = torch.Generator().manual_seed(1)
    s = sizes.blip["image_size"]

    def samples(n: int, target: bool = True):
        return [{"pixels": torch.rand(2, 1, s, s, generator=gen), "views": ["PA", "LATERAL"],
                 "instruction": "Indication: cough. Likely findings: effusion. Write the report.",
                 **({"target": " ".join(TEXTS[i % 8: i % 8 + 5])} if target else {})} for i in range(n)]

    def step():
        return model(model.collate(samples(sizes.blip_batch)).to(run.device))

    result = train_loop(run, model, step, steps, 2 * sizes.blip_batch, lr=1e-4)  # two views per study
    model.eval()

    def report(n: int):
        batch = model.collate(samples(n, target=False)).to(run.device)

        def fn():
            with torch.no_grad(), run.autocast():
                model.generate_texts(batch, max_new_tokens=sizes.blip_tokens)
        return fn

    run.reset_memory()
    result.update(latency_b1=latency(run, report(1), sizes.latency_repeats[0]),
                  latency_b32=latency(run, report(32), sizes.latency_repeats[1]), report_peak_gb=run.peak_gb())
    q = sizes.blip["qformer"]
    return {"family": f"clinicalblip (Q-Former {q['layers']}x{q['hidden_size']}, {s} px)", "unit": "images/s", **result}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (automatic without CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per family (default 200; tiny 3)")
    parser.add_argument("--full", action="store_true", help="full sizes even without CUDA (CPU training throughput)")
    parser.add_argument("--no-latency", action="store_true", help="skip the report latency runs")
    parser.add_argument("--batch", type=int, default=None, help="training batch of every family (default: the size's)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or (device.type != "cuda" and not args.full)
    sizes = TINY if tiny else FULL
    steps = args.steps or (3 if tiny else 200)
    run = Run(device)
    torch.manual_seed(0)
    if run.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    if args.no_latency:
        sizes = replace(sizes, latency_repeats=(0, 0))
    if args.batch:
        sizes = replace(sizes, detector_batch=args.batch, decoder_batch=args.batch, blip_batch=args.batch)
    results = region_guided(run, sizes, steps) + [clinical_blip(run, sizes, steps)]
    wall = time.perf_counter() - start
    name = torch.cuda.get_device_name(0) if run.cuda else "CPU"
    precision = "bf16 autocast" if run.bf16 else "fp32"
    mem = "peak GPU GB" if run.cuda else "peak RSS GB"
    rows = [[r["family"], f"{r['params_m']:.1f}", r["steps"], f"{r['per_s']:.3g} {r['unit']}", f"{r['step_ms']:.0f}",
             f"{r['peak_gb']:.2f}", "%.0f / %.0f" % r["latency_b1"], "%.0f / %.0f" % r["latency_b32"]] for r in results]
    table = print_table(f"gpu_smoke on {name} ({'tiny' if tiny else 'full'} sizes, {precision}, {wall:.0f} s)",
                        ["family", "params M", "steps", "train throughput", "step ms p50", mem,
                         "report ms b1 p50/p95", "report ms b32 p50/p95"], rows)
    print("(report latency: region-guided = detector + decoder per image; the two region-guided rows share it)")
    if not args.no_save:
        save_results(f"gpu_smoke_{'cuda' if run.cuda else 'cpu'}{'_tiny' if tiny else '_full'}",
                     {"device": name, "tiny": tiny, "precision": precision, "wall_s": round(wall, 1), "results": results}, table)
    return results


if __name__ == "__main__":
    main()
