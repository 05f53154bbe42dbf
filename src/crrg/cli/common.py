"""What every command shares: the --quiet state, progress bars, and one-line error reporting.

Commands import heavy libraries (torch, transformers) inside their functions so ``crrg --help``
answers quickly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)


@dataclass
class CliState:
    quiet: bool = False


def _current_context():
    """The running command's context. Typer >= 0.20 vendors its own click (``typer._click``); older
    releases use the click package, so ask whichever one typer runs on."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    return get_current_context(silent=True)


def state() -> CliState:
    """The root command's state (``--quiet``); defaults apply when called outside the CLI."""
    ctx = _current_context()
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, CliState) else CliState()


def is_quiet() -> bool:
    return state().quiet


def progress(iterable: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate with a rich progress bar on stderr, unless --quiet."""
    if is_quiet():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


def info(message: str) -> None:
    """A human-readable status line on stderr (silent with --quiet); results go to stdout."""
    if not is_quiet():
        console.print(message)


def setup_logging(quiet: bool) -> None:
    """crrg's own loggers print to stderr (warnings only with --quiet). Libraries that install their
    own handlers (Lightning) are not also routed through the root logger, so no line prints twice."""
    level = logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("crrg")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    # transformers' weight-loading bars and generation hints are noise for crrg's users; set before
    # commands import it (they import lazily). A user's own setting wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
