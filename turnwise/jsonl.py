"""Reading JSONL files and reporting pydantic validation errors, the same way everywhere.

Every file format turnwise reads line by line (dialogues, teacher scores) goes through
:func:`iter_models`; every place that turns a pydantic error into a message for a person (files,
HTTP bodies, WebSocket frames) uses :func:`validation_message`. Neither echoes the offending value.
Every JSON report turnwise writes goes through :func:`dumps_json`: strict JSON, never ``NaN``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from turnwise.errors import DataError

M = TypeVar("M", bound=BaseModel)


def validation_message(errors: ValidationError | Iterable[Mapping[str, Any]], *,
                       skip: tuple[str, ...] = ()) -> str:
    """Pydantic errors -> one line naming each bad field: ``field 'turns.0.text': Field required; ...``.

    ``skip`` drops location parts that mean nothing to the reader (FastAPI's ``body``, ``path``).
    """
    items = errors.errors() if isinstance(errors, ValidationError) else errors
    parts = []
    for e in items:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in skip)
        parts.append(f"field '{loc or 'body'}': {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for every non-blank line; a bad line is a DataError naming file and line."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=str(p))
    if p.is_dir():
        raise DataError("a folder, not a JSONL file", path=str(p))
    with p.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON ({err.msg} at column {err.colno})", path=str(p), line=lineno) from None


def iter_models(path: str | Path, model: type[M]) -> Iterator[M]:
    """Every line of a JSONL file validated as ``model``; errors name file, line and field."""
    for lineno, obj in iter_json_lines(path):
        try:
            yield model.model_validate(obj)
        except ValidationError as err:
            raise DataError(validation_message(err), path=str(path), line=lineno) from None


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively; numpy scalars and
    arrays (anything with ``tolist``) become plain Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    tolist = getattr(obj, "tolist", None)
    if callable(tolist) and not isinstance(obj, str | bytes):
        return finite(tolist())
    return obj


def dumps_json(obj: Any, **kw: Any) -> str:
    """Strict JSON (``allow_nan=False``) of ``obj`` after :func:`finite`: a number nobody could compute is
    ``null``, never the invalid ``NaN``."""
    kw.setdefault("default", str)
    return json.dumps(finite(obj), allow_nan=False, **kw)
