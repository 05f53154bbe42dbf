"""CLIP speed and memory on this machine: training throughput and per-image inference latency.

Run by hand (never in CI)::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_clip.py --image-size 128 --batch-size 32 --threads 1

Measures, for ``clip-resnet18-minilm`` (ResNet-18 + the bundled MiniLM):
- training throughput (images/s) of full contrastive steps (forward, backward, AdamW) on random
  images and realistic report-length texts,
- inference latency per image for zero-shot classification (14 observations, prompts embedded once)
  and for the supervised classifier head (batch of 1, after warm-up),
- peak resident memory.
Prints a table and writes ``benchmarks/results/bench_clip.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from crrg.io import atomic_write_json

REPORT = ("The heart is mildly enlarged. There is a small left pleural effusion with blunting of the left "
          "costophrenic angle. No pneumothorax. The mediastinal contours are normal. Mild bibasilar atelectasis.")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_training(model, image_size: int, batch_size: int, steps: int, warmup: int) -> float:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randn(batch_size, 1, image_size, image_size)
    texts = [REPORT] * batch_size
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(images, texts)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch_size * len(times) / sum(times)


def bench_latency(predict, image: np.ndarray, repeats: int) -> tuple[float, float]:
    predict([image])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict([image])
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), float(np.percentile(times, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clip-resnet18-minilm")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--freeze-text-layers", type=int, default=0, help="As model.freeze_text_layers in the training config.")
    parser.add_argument("--input-size", type=int, default=1024, help="Side of the raw test image (resized by the model).")
    parser.add_argument("--out", type=Path, default=None, help="Default: benchmarks/results/bench_clip_<size>px.json")
    args = parser.parse_args()

    from crrg.clip.zeroshot import ZeroShotClassifier
    from crrg.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    clip = create_model(args.model, image_encoder={"image_size": args.image_size})
    from crrg.clip.task import freeze_text_layers

    freeze_text_layers(clip, args.freeze_text_layers)
    load_before = os.getloadavg()[0]  # the machine is shared: numbers only mean something beside the load
    throughput = bench_training(clip, args.image_size, args.batch_size, args.steps, args.warmup)

    clip.eval()
    image = np.random.default_rng(0).random((args.input_size, args.input_size), dtype=np.float32)
    t0 = time.perf_counter()
    zeroshot = ZeroShotClassifier.from_prompt_file(clip)
    prompt_ms = 1000 * (time.perf_counter() - t0)
    zs_med, zs_p90 = bench_latency(zeroshot.probabilities, image, args.repeats)
    classifier = create_model("classifier-resnet18", image_encoder={"image_size": args.image_size}).eval()
    clf_med, clf_p90 = bench_latency(classifier.probabilities, image, args.repeats)

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), shared 2-core CPU",
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size, "input_image": args.input_size,
        "frozen_text_layers": args.freeze_text_layers,
        "train_images_per_s": round(throughput, 2),
        "zeroshot_latency_ms_median": round(zs_med, 1), "zeroshot_latency_ms_p90": round(zs_p90, 1),
        "zeroshot_prompt_embedding_once_ms": round(prompt_ms, 1),
        "classifier_latency_ms_median": round(clf_med, 1), "classifier_latency_ms_p90": round(clf_p90, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "torch": torch.__version__,
    }
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    out = args.out or Path(__file__).parent / "results" / f"bench_clip_{args.image_size}px.json"
    atomic_write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
