"""Run one training job in a fresh process and kill it abruptly (``os._exit``, no cleanup, like kill -9).

    python -m tests.training.crash SPEC.json

SPEC: ``{"task": NAME | "rrg-stages", "config": {...}, "out": DIR, "resume": bool,
"die_after": STEP | null, "die_in_stage": STAGE | null}``. The process dies at the start of the first
training batch once ``global_step >= die_after`` (in stage ``die_in_stage`` for the rrg pipeline),
i.e. after that step's checkpoint, if any, was written; exit code :data:`KILLED`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

KILLED = 17


class DieAfter(Callback):
    def __init__(self, step: int, stage: str | None = None) -> None:
        self.step, self.stage = step, stage

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.stage is not None and getattr(pl_module, "stage_name", None) != self.stage:
            return
        if trainer.global_step >= self.step:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(KILLED)


def run(spec: dict) -> None:
    from crrg.training.engine import train

    callbacks = [DieAfter(spec["die_after"], spec.get("die_in_stage"))] if spec.get("die_after") is not None else []
    if spec["task"] == "rrg-stages":
        from crrg.rrg.task import train_stages

        train_stages(spec["config"], spec["out"], resume=spec["resume"], extra_callbacks=callbacks, progress_bar=False)
    else:
        train(spec["task"], spec["config"], spec["out"], resume=spec["resume"], progress_bar=False, extra_callbacks=callbacks)


def main() -> None:
    import torch

    torch.set_num_threads(1)  # the same as the test process, so float sums come out the same
    run(json.loads(Path(sys.argv[1]).read_text()))


if __name__ == "__main__":
    main()
