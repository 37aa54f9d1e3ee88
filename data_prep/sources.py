"""Where real task data comes from, and the small helpers every real-data loader shares.

Three sources, tried in this order by every real task:

1. a local mirror directory (``data_dir``, the ``--data-dir`` flag, or ``$SDFT_DATA_DIR``): the raw files in the
   layout documented in ``data_prep/README.md`` (for clusters whose compute nodes are offline);
2. the Hugging Face hub (or, for ToolAlpaca, its GitHub release files) when no ``data_dir`` is given and the
   hub is not switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``);
3. otherwise a :class:`DataSourceError` that says exactly what to do.

Raw-file readers report a malformed line or field as :class:`~data_prep.schema.RecordError` naming the file, the
line (JSONL, 1-based) or index (JSON arrays, 0-based) and the field; with ``skip_invalid`` the record is skipped
and counted in a :class:`~data_prep.schema.SkipReport` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from data_prep.schema import RecordError, SkipReport

log = logging.getLogger("data_prep")

SPLIT_FRACTIONS = {"train": 0.75, "val": 0.05, "test": 0.20}
SPLIT_SEED = 0
"""The train/val/test partition is fixed by this seed, independent of the training seed, so that every training
seed of an experiment is evaluated on the same test questions. ``load_task(seed=...)`` only picks the subsample
when ``n`` is given."""


class DataSourceError(FileNotFoundError):
    """Neither a local mirror nor the hub can provide a task's data; the message says what to do."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def resolve_data_dir(data_dir) -> Path | None:
    """``data_dir`` as a Path, else ``$SDFT_DATA_DIR``, else None (then the hub is used)."""
    value = data_dir if data_dir not in (None, "") else os.environ.get("SDFT_DATA_DIR") or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataSourceError(f"data directory {path} does not exist (from --data-dir / $SDFT_DATA_DIR)")
    return path


def no_source_message(task: str, mirror_files: str, hub: str) -> str:
    return (
        f"task {task!r}: no data source available. Either pass --data-dir D (data_dir=D, or set $SDFT_DATA_DIR) "
        f"where D holds {mirror_files} (layout: data_prep/README.md), or set up the Hugging Face hub to read "
        f"{hub}: unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE, make sure this machine can reach huggingface.co, "
        f"and log in (`hf auth login`) if the dataset requires it."
    )


def require_hub(task: str, mirror_files: str, hub: str) -> None:
    """Raise the what-to-do error when the hub is switched off."""
    if hub_offline():
        raise DataSourceError(no_source_message(task, mirror_files, hub) + " (The hub is switched off here.)")


def hub_rows(task: str, mirror_files: str, dataset_id: str, config: str | None, split: str,
             revision: str | None = None) -> list[dict]:
    """All rows of one hub split, as dicts; hub failures become a DataSourceError with the what-to-do message."""
    require_hub(task, mirror_files, dataset_id)
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset_id, config, split=split, revision=revision)
    except Exception as err:  # network, auth, missing config: the same advice applies
        raise DataSourceError(no_source_message(task, mirror_files, dataset_id) + f" (hub error: {err})") from err
    return [dict(row) for row in ds]


def download(url: str, dest: Path, task: str, mirror_files: str) -> Path:
    """Fetch ``url`` to ``dest`` once (used for ToolAlpaca's GitHub release files); the cached copy afterwards."""
    if dest.exists():
        return dest
    require_hub(task, mirror_files, url)
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as fh:
            fh.write(resp.read())
    except Exception as err:
        raise DataSourceError(no_source_message(task, mirror_files, url) + f" (download error: {err})") from err
    tmp.replace(dest)
    return dest


# --------------------------------------------------------------------------------------------------
# Reading raw files with located errors
# --------------------------------------------------------------------------------------------------


def read_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(location, object)`` for every record of a JSON array file or a JSONL file.

    ``location`` is ``"line N"`` (JSONL, 1-based) or ``"index N"`` (JSON array, 0-based). A line or file that is
    not valid JSON raises RecordError naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" or (path.suffix != ".json" and not text.lstrip().startswith("[")):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(str(path), f"line {lineno}", "<json>", f"not valid JSON: {err.msg}") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(str(path), f"line {err.lineno}", "<json>", f"not valid JSON: {err.msg}") from None
    if not isinstance(data, list):
        raise RecordError(str(path), "<file>", "<json>", f"expected a JSON array of records, got {type(data).__name__}")
    for i, obj in enumerate(data):
        yield f"index {i}", obj


def require_field(obj: Any, name: str, source: str, where: str, kind: type | tuple = str, nonempty: bool = True):
    """``obj[name]``, checked for type (and non-emptiness for strings); RecordError otherwise."""
    if not isinstance(obj, dict):
        raise RecordError(source, where, "<record>", f"expected an object, got {type(obj).__name__}")
    if name not in obj:
        raise RecordError(source, where, name, "missing")
    value = obj[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(source, where, name, f"expected {names}, got {type(value).__name__}")
    if nonempty and isinstance(value, str) and not value.strip():
        raise RecordError(source, where, name, "empty")
    return value


def convert_all(items: Iterable[tuple[str, Any]], convert: Callable[[Any, str], Any], source: str,
                skip_invalid: bool = False) -> tuple[list, SkipReport]:
    """Apply ``convert(obj, location)`` to every located item. ``convert`` returns a record, a list of records,
    or None (a row the task does not select, e.g. a non-L3 question: not an error, not counted as skipped).
    RecordError propagates unless ``skip_invalid``; then it is counted in the report."""
    report = SkipReport(source)
    out: list = []
    for where, obj in items:
        try:
            result = convert(obj, where)
        except RecordError as err:
            if not skip_invalid:
                raise
            report.skipped.append(str(err))
            continue
        if result is None:
            continue
        out.extend(result if isinstance(result, list) else [result])
    report.kept = len(out)
    if report.skipped:
        log.warning("%s", report)
    return out, report


# --------------------------------------------------------------------------------------------------
# Splits and ids
# --------------------------------------------------------------------------------------------------


def stable_id(prefix: str, *parts: str) -> str:
    """A short content hash: the same question gets the same id whatever the file order."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]
    return f"{prefix}-{digest}"


def seeded_split(items: list, split: str, seed: int = SPLIT_SEED, fractions: dict[str, float] = SPLIT_FRACTIONS,
                 key: Callable[[Any], str] = lambda r: r["id"]) -> list:
    """One part of a seeded partition. Items are first sorted by ``key`` so the result does not depend on the
    order of the input files; the parts are disjoint and cover every item."""
    if split not in fractions:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(fractions)}")
    ordered = sorted(items, key=key)
    rng = random.Random(f"split:{seed}")
    rng.shuffle(ordered)
    total = len(ordered)
    bounds, start = {}, 0
    names = list(fractions)
    for i, name in enumerate(names):
        end = total if i == len(names) - 1 else start + int(round(fractions[name] * total))
        bounds[name] = (start, min(end, total))
        start = min(end, total)
    lo, hi = bounds[split]
    return ordered[lo:hi]


def subsample(records: list, n: int | None, seed: int, what: str) -> list:
    """``n`` records chosen with ``seed`` (all of them, in order, when n is None or not smaller)."""
    if n is None or n >= len(records):
        if n is not None and n > len(records):
            log.warning("%s: asked for %d records, only %d available; using all", what, n, len(records))
        return list(records)
    rng = random.Random(f"subsample:{seed}")
    idx = sorted(rng.sample(range(len(records)), n))
    return [records[i] for i in idx]


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n
