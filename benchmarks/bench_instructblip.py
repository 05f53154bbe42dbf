"""ClinicalBLIP from a hub InstructBLIP (``crrg train blip`` with ``model.backend: instructblip``), run by hand:

* trainable / total parameters per stage (stage 1: Q-Former bridge + LoRA on the ViT; stage 2: bridge +
  LoRA on the LM) for the tiny CI stand-ins and, built on the meta device from their published
  architectures (no download, no memory), for Salesforce/instructblip-flan-t5-xl and -vicuna-7b;
* training steps/s of the tiny stand-ins on this machine (forward + backward + AdamW, the engine's
  batches), median and p95 over the timed steps.

    python benchmarks/bench_instructblip.py [--steps 30] [--batch 4]

Writes benchmarks/results/instructblip_train.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
from common import machine, median, percentile, print_table, save_results  # noqa: E402

# The hub checkpoints' architectures (their config.json on the hub), enough to count parameters.
VISION_G = {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16,
            "image_size": 224, "patch_size": 14, "qkv_bias": True}
QFORMER = {"vocab_size": 30523, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
           "intermediate_size": 3072, "cross_attention_frequency": 2, "encoder_hidden_size": 1408}
HUB = {
    "Salesforce/instructblip-flan-t5-xl": {"model_type": "t5", "d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32,
                                           "num_layers": 24, "num_decoder_layers": 24, "vocab_size": 32128,
                                           "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "Salesforce/instructblip-vicuna-7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                          "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32001},
}
STAGES = {"1": {"vision": {"r": 8, "alpha": 16}}, "2": {"vision": {"r": 8, "alpha": 16}, "lm": {"r": 16, "alpha": 32}}}


def stage_counts(make_model) -> dict[str, dict[str, int]]:
    """Trainable and total parameters of each stage, as crrg.blip.task.build_blip sets them."""
    from crrg.blip import lora as lora_lib

    out = {}
    for stage, parts in STAGES.items():
        model = make_model()
        for part, spec in parts.items():
            model._attach_lora(part, spec)
        counts = lora_lib.set_trainable(model, [g for g in lora_lib.STAGE_DEFAULTS[int(stage)] if g != "soft_prompt"])
        out[stage] = {"trainable": sum(counts.values()), "total": sum(p.numel() for p in model.parameters())}
    return out


def meta_model(text: dict):
    """A HubInstructBlip around an InstructBLIP built on the meta device (what from_pretrained would fill)."""
    import torch
    from torch import nn
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    from crrg.blip.hub import HubInstructBlip

    config = InstructBlipConfig(vision_config=VISION_G, qformer_config=QFORMER, text_config=text, num_query_tokens=32)
    with torch.device("meta"):
        inner = InstructBlipForConditionalGeneration(config)
    wrapper = HubInstructBlip.__new__(HubInstructBlip)
    nn.Module.__init__(wrapper)
    wrapper.model, wrapper.config = inner, {}
    return wrapper


def toy_speed(lm: str, folder: Path, manifest: Path, steps: int, batch: int) -> list[float]:
    """Seconds per optimizer step of stage 1 and stage 2 on a tiny stand-in."""
    import torch

    from crrg.blip.task import BlipData, build_blip

    times = []
    for stage, lora in (("1", {"vision": {"r": 8}}), ("2", {"vision": {"r": 8}, "lm": {"r": 16}})):
        config = {"stage": stage, "model": {"backend": "instructblip", "hub_id": str(folder)}, "lora": lora,
                  "data": {"manifest": str(manifest)}, "trainer": {"batch_size": batch}}
        torch.manual_seed(0)
        model = build_blip(config)
        data = BlipData(model, config)
        data.setup()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
        loader = data.train_dataloader()
        per_step, done = [], 0
        while done < steps + 3:
            for b in loader:
                start = time.perf_counter()
                optimizer.zero_grad()
                model(b).backward()
                optimizer.step()
                if done >= 3:  # warm-up steps left out
                    per_step.append(time.perf_counter() - start)
                done += 1
                if done >= steps + 3:
                    break
        times.append(per_step)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from crrg.models.registry import create_model
    from tests.blip.conftest import write_tiny_manifest
    from tests.blip.standins import make_tiny_instructblip

    rows, speed_rows, payload = [], [], {"machine": machine(), "params": {}, "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_tiny_manifest(Path(tmp) / "data", n=24)
        for lm in ("t5", "opt"):
            folder = make_tiny_instructblip(Path(tmp) / lm, lm)
            name = f"tiny stand-in ({lm})"
            payload["params"][name] = stage_counts(lambda: create_model({"family": "blip", "backend": "instructblip",
                                                                          "hub_id": str(folder)}))
            for stage, per_step in zip(("1", "2"), toy_speed(lm, folder, manifest, args.steps, args.batch)):
                payload["speed"][f"{name} stage {stage}"] = per_step
                speed_rows.append([name, stage, args.batch, f"{1 / median(per_step):.1f}",
                                   f"{median(per_step) * 1000:.0f}", f"{percentile(per_step, 0.95) * 1000:.0f}"])
    for hub_id, text in HUB.items():
        payload["params"][hub_id] = stage_counts(lambda: meta_model(text))
    for name, stages in payload["params"].items():
        for stage, c in stages.items():
            rows.append([name, stage, f"{c['trainable']:,}", f"{c['total']:,}", f"{100 * c['trainable'] / c['total']:.2f}%"])
    table = print_table("trainable / total parameters per stage (LoRA r=8 on the ViT's qkv; r=16 on the LM's q/v)",
                        ["model", "stage", "trainable", "total", "share"], rows)
    load = os.getloadavg()[0]  # other jobs on the machine slow the timings down
    payload["load_average"] = load
    table += "\n" + print_table(f"training speed, {machine()}, load average {load:.1f}",
                                 ["model", "stage", "batch", "steps/s", "median ms", "p95 ms"], speed_rows)
    save_results("instructblip_train", payload, table)


if __name__ == "__main__":
    main()
