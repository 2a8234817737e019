"""The command line's choices and shared options: Enums and ranges that typer checks at parse time,
before any heavy import, so a misspelt choice or an out-of-range number is a usage error (exit 2)
naming the option, not a late failure inside training."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Source(str, Enum):
    dailydialog = "dailydialog"
    meld = "meld"
    multiwoz = "multiwoz"
    sgd = "sgd"
    multidogo = "multidogo"
    jsonl = "jsonl"


class Teacher(str, Enum):
    llm = "llm"
    zeroshot = "zeroshot"
    fewshot = "fewshot"
    simulated = "simulated"


class Objective(str, Enum):
    pairwise = "pairwise"
    pointwise = "pointwise"
    pairwise_pointwise = "pairwise+pointwise"
    none = "none"


class Encoder(str, Enum):
    streaming = "streaming"
    flat = "flat"


class PairMode(str, Enum):
    intra = "intra"
    inter = "inter"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class SelectMetric(str, Enum):
    accuracy = "accuracy"
    macro_f1 = "macro_f1"


class Variant(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    int8 = "int8"
    fp16 = "fp16"


class Dataset(str, Enum):
    dailydialog = "dailydialog"
    meld = "meld"
    jsonl = "jsonl"


class Preset(str, Enum):
    cpu = "cpu"
    round2 = "round2"
    full = "full"


class Table1Teacher(str, Enum):
    simulated = "simulated"
    zeroshot = "zeroshot"
    fewshot = "fewshot"


EXPORT_VARIANTS = ("fp32", "int8", "fp16")
HUB_ALIASES = ("minilm", "todbert")


def above_zero(value: float | None) -> float | None:
    """A number that must be > 0 (typer's ``min`` is inclusive)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value} is not > 0")
    return value


def check_variants(value: str) -> str:
    """``--variants``: a comma-separated subset of fp32, int8, fp16."""
    parts = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in parts if v not in EXPORT_VARIANTS]
    if not parts or bad:
        raise typer.BadParameter(f"expected a comma-separated list of {', '.join(EXPORT_VARIANTS)}, got '{value}'")
    return ",".join(parts)


def check_required_variants(value: str) -> str:
    """``--require``: like ``--variants``, or empty (no variant is required)."""
    return check_variants(value) if value.strip() else ""


def looks_like_path(name: str) -> bool:
    """A backbone that is a path rather than a hub id (``org/name``) or an alias."""
    return (name.startswith(("/", "./", "../", "~")) or name.endswith("/") or name.count("/") > 1
            or "\\" in name or name in (".", ".."))


def check_backbone(value: str | None) -> str | None:
    """A backbone that names a path must exist; ``org/name`` that exists locally is a path, else a hub id."""
    if value is None or value in HUB_ALIASES:
        return value
    path = Path(value).expanduser()
    if looks_like_path(value) and not path.exists():
        raise typer.BadParameter(f"backbone path '{value}' does not exist (a hub id looks like 'org/name'; "
                                 f"offline aliases: {', '.join(HUB_ALIASES)})")
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"backbone path '{value}' is a file; pass the model's folder (with config.json)")
    if path.is_dir() and not (path / "config.json").exists():
        raise typer.BadParameter(f"backbone folder '{value}' has no config.json (not a Hugging Face model folder)")
    return value


def check_shard(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected i/n (e.g. 0/4), got '{value}'") from None
    if n < 1 or not 0 <= i < n:
        raise typer.BadParameter(f"need 0 <= i < n, got '{value}'")
    return value


SourceOpt = Annotated[Source, typer.Option("--source", help="format of --data: a turnwise JSONL file (jsonl) or a "
                                           "public corpus folder in its original format", case_sensitive=False)]
SplitOpt = Annotated[str | None, typer.Option("--split", help="corpus split: train, validation or test "
                                              "(default: all for data commands; ignored for jsonl)")]
MaxDialogues = Annotated[int | None, typer.Option("--max-dialogues", min=1, help="use only the first N dialogues")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed (teacher votes, splits, initialisation)")]
