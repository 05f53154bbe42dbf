"""``crrg text``: report cleaning, sentence splitting, normalisation, and tokenizer training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from crrg.cli.common import info

text_app = typer.Typer(help="Report text tools: clean, sentences, normalize, train-tokenizer.", no_args_is_help=True)

SOURCE = typer.Argument(None, help="Text file to read; '-' or nothing reads standard input.")
LINES = typer.Option(False, "--lines", help="Treat every input line as its own report (default: the whole input is one report).")


def _read_source(source: Optional[Path]) -> str:
    from crrg.errors import InputError

    if source is None or str(source) == "-":
        return sys.stdin.read()
    if not source.is_file():
        raise InputError(f"{source} does not exist or is not a file")
    try:
        return source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source} is not UTF-8 text") from None


def _reports(source: Optional[Path], lines: bool) -> list[str]:
    text = _read_source(source)
    return [line for line in text.splitlines() if line.strip()] if lines else [text]


@text_app.command("clean")
def clean_cmd(source: Optional[Path] = SOURCE, lines: bool = LINES,
              deid_token: Optional[str] = typer.Option(None, "--deid-token", help="Replace XXXX runs with this token instead of removing them.")) -> None:
    """Remove XXXX de-identification runs, list numbering, repeated punctuation and ragged whitespace."""
    from crrg.text import clean_report

    for report in _reports(source, lines):
        typer.echo(clean_report(report, deid_replacement=deid_token))


@text_app.command("sentences")
def sentences_cmd(source: Optional[Path] = SOURCE, lines: bool = LINES,
                  clean: bool = typer.Option(True, "--clean/--raw", help="Clean the report before splitting.")) -> None:
    """Print one sentence per line (a blank line between reports with --lines)."""
    from crrg.text import clean_report, split_sentences

    for i, report in enumerate(_reports(source, lines)):
        if i:
            typer.echo("")
        for sentence in split_sentences(clean_report(report, keep_newlines=True) if clean else report):
            typer.echo(sentence)


@text_app.command("normalize")
def normalize_cmd(source: Optional[Path] = SOURCE, lines: bool = LINES) -> None:
    """Print the metric/labeler normal form (lower case, punctuation as separate tokens)."""
    from crrg.text import normalize_for_metrics

    for report in _reports(source, lines):
        typer.echo(normalize_for_metrics(report))


@text_app.command("train-tokenizer")
def train_tokenizer_cmd(
    manifest: Path = typer.Argument(..., help="crrg manifest, or JSONL with a 'report' field per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the tokenizer to (PreTrainedTokenizerFast format)."),
    vocab_size: int = typer.Option(4000, "--vocab-size", min=1, help="Vocabulary size, special tokens included."),
    min_frequency: int = typer.Option(2, "--min-frequency", min=1, help="Merges seen fewer times are not learnt."),
    cased: bool = typer.Option(False, "--cased", help="Keep case (default: lower-case, like the metrics)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only reports of this split (train, val, test); for manifests."),
) -> None:
    """Train a byte-level BPE tokenizer (<bos>/<eos>/<pad>/<unk>) on report texts."""
    from crrg.errors import InputError
    from crrg.text.tokenizer import TokenizerConfig, load_tokenizer, report_texts_from_jsonl, save_tokenizer, train_tokenizer

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if split is not None:
        from crrg.records import iter_manifest

        texts = [r.report for r in iter_manifest(manifest, resolve_paths=False) if r.split == split and r.report]
        if not texts:
            raise InputError(f"{manifest} has no reports in split {split!r}")
    else:
        texts = list(report_texts_from_jsonl(manifest))
    config = TokenizerConfig(vocab_size=vocab_size, min_frequency=min_frequency, lowercase=not cased)
    info(f"training a {vocab_size}-token BPE tokenizer on {len(texts)} reports")
    tokenizer = train_tokenizer(texts, config)
    save_tokenizer(tokenizer, out, config)
    loaded = load_tokenizer(out)
    lengths = [len(ids) for ids in loaded(texts[: min(len(texts), 2000)])["input_ids"]]
    info(f"wrote {out} (vocabulary {len(loaded)}; {sum(lengths) / len(lengths):.1f} tokens per report on average)")


def register(app: typer.Typer) -> None:
    app.add_typer(text_app, name="text")
