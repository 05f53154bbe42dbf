"""One DDP rank, started by :func:`crrg.training.engine.train` for ``devices > 1``.

``python -m crrg.training.worker TASK OUT_DIR DEVICES [--resume-from CKPT] [--no-progress]`` with
MASTER_ADDR / MASTER_PORT / WORLD_SIZE / RANK / LOCAL_RANK set by the engine. The config is the one
the engine wrote to ``OUT_DIR/config.json`` just before, so every rank trains the same thing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from crrg.training.engine import CONFIG_FILE, fit
from crrg.training.tasks import get_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crrg.training.worker")
    parser.add_argument("task")
    parser.add_argument("out", type=Path)
    parser.add_argument("devices", type=int)
    parser.add_argument("--resume-from", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.no_progress else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = json.loads((args.out / CONFIG_FILE).read_text(encoding="utf-8"))
    fit(get_task(args.task), args.task, config, args.out, devices=args.devices, resume_from=args.resume_from, progress_bar=not args.no_progress)


if __name__ == "__main__":
    main()
