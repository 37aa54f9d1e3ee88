"""Where real task data comes from, and the small helpers every real-data loader shares.

Three sources, tried in this order by every real task:

1. a local mirror directory (``data_dir``, the ``--data-dir`` flag, or ``$SDFT_DATA_DIR``): the raw files in the
   layout documented in ``data_prep/README.md`` (for clusters whose compute nodes are offline);
2. the Hugging Face hub (or, for ToolAlpaca, its GitHub release files) when no ``data_dir`` is given and the
   hub is not switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``);
3. otherwise a :class:`DataSourceError` that says exactly what to do.

Every loader reads its raw files through :func:`read_json_records` (or :func:`read_text` for plain-text files): a
file that is not UTF-8 or holds no records raises :class:`~data_prep.schema.DataFileError` naming it. A malformed
line or field is a :class:`~data_prep.schema.RecordError` naming the file, the line (JSONL, 1-based) or index (JSON
arrays, 0-based) and the field; with ``skip_invalid`` the record is skipped and counted instead. :func:`dedupe`
removes duplicate records before a source is split, so that no question is in two splits. Generated data is written
by :func:`write_generated`, which never replaces a different existing file unless told to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from data_prep.schema import DataFileError, RecordError, SkipReport, SplitReport
from sdft.errors import UserError

log = logging.getLogger("data_prep")

SPLIT_FRACTIONS = {"train": 0.75, "val": 0.05, "test": 0.20}
SPLIT_SEED = 0
"""The train/val/test partition is fixed by this seed, independent of the training seed, so that every training
seed of an experiment is evaluated on the same test questions. ``load_task(seed=...)`` only picks the subsample
when ``n`` is given."""


class DataSourceError(UserError, FileNotFoundError):
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
    rows = [dict(row) for row in ds]
    if not rows:
        raise DataFileError(f"{dataset_id}:{config}/{split}", "the hub split holds no rows")
    return rows


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


def read_text(path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped). A missing file raises FileNotFoundError; a file
    that is not UTF-8, or holds nothing but whitespace, raises DataFileError naming it (and the offending line)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataFileError(path, f"not valid UTF-8: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}); "
                                  "re-save the file as UTF-8") from None
    if not text.strip():
        raise DataFileError(path, "the file is empty (no records)")
    return text


def read_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(location, object)`` for every record of a JSON array file or a JSONL file: the one reader of raw records.

    ``location`` is ``"line N"`` (JSONL, 1-based) or ``"index N"`` (JSON array, 0-based). A ``.jsonl`` file is JSON
    Lines; any other file is a JSON array, or JSON Lines when it holds several JSON values, one per line. A line or file that is
    not valid JSON raises RecordError naming the file and the line; a file that is not UTF-8, or has no records (empty,
    blank lines only, ``[]``), raises DataFileError naming the file (:func:`read_text`).
    """
    path = Path(path)
    text = read_text(path)
    if path.suffix == ".jsonl" or (not text.lstrip().startswith("[") and _several_json_values(text)):
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
    if not data:
        raise DataFileError(path, "the file is an empty JSON array (no records)")
    for i, obj in enumerate(data):
        yield f"index {i}", obj


def _several_json_values(text: str) -> bool:
    """Whether ``text`` is JSON Lines rather than one JSON value (a ``.json`` file may hold either:
    data_prep/README.md)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err.msg == "Extra data"
    return False


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
    RecordError propagates unless ``skip_invalid``; then it is counted in the report, which also holds the
    ``(source, location)`` of every kept record."""
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
        result = result if isinstance(result, list) else [result]
        out.extend(result)
        report.locations.extend((source, where) for _ in result)
    report.kept = len(out)
    if report.skipped:
        log.warning("%s", report)
    return out, report


# --------------------------------------------------------------------------------------------------
# Duplicates, splits and ids
# --------------------------------------------------------------------------------------------------


def whitespace_key(text: str) -> str:
    """A question with its whitespace normalized (runs of spaces / newlines -> one space, ends stripped)."""
    return " ".join(text.split())


_EXAMPLE_FIELDS = ("prompt", "demonstration", "reference")


def dedupe(records: list[dict], locations: list[tuple[str, str]] | None, key: Callable[[dict], Any],
           report: SplitReport | None = None, skip_invalid: bool = False) -> list[dict]:
    """``records`` without duplicates, first occurrence kept, in order; run on a whole source before it is split.

    * a record identical to an earlier one (same id, prompt, demonstration and reference) is a duplicate row;
    * a record with an earlier record's id but other content is an error (RecordError naming both locations and the
      id; with ``skip_invalid`` it is skipped and counted instead);
    * a record whose question (``key``) an earlier record asks is a duplicate question.

    ``locations`` holds the ``(file, location)`` of each record (``SkipReport.locations``); the counts and the first
    examples go to ``report``.
    """
    report = report if report is not None else SplitReport()
    locations = locations if locations is not None else [("<records>", f"record {i}") for i in range(len(records))]
    if len(locations) != len(records):
        raise ValueError(f"dedupe: {len(records)} records but {len(locations)} locations")
    by_id: dict[str, tuple[dict, tuple[str, str]]] = {}
    by_key: dict[Any, tuple[str, str]] = {}
    out: list[dict] = []
    first_example = len(report.duplicate_examples)

    def place(loc, other):
        return other[1] if other[0] == loc[0] else f"{other[0]}: {other[1]}"

    for rec, loc in zip(records, locations):
        first = by_id.get(rec["id"])
        if first is not None:
            differ = [f for f in _EXAMPLE_FIELDS if first[0].get(f) != rec.get(f)]
            if not differ:
                report.duplicate_rows += 1
                report.duplicate_examples.append(f"{loc[0]}: {loc[1]}: {rec['id']} is a copy of {place(loc, first[1])}")
                continue
            err = RecordError(loc[0], loc[1], "id", f"duplicate id {rec['id']!r}: {place(loc, first[1])} has the "
                                                    f"same id with a different {' / '.join(differ)}")
            if not skip_invalid:
                raise err
            report.skipped.append(str(err))
            continue
        k = key(rec)
        if k in by_key:
            report.duplicate_questions += 1
            report.duplicate_examples.append(f"{loc[0]}: {loc[1]}: {rec['id']} asks the question of "
                                             f"{place(loc, by_key[k])}")
            continue
        by_id[rec["id"]] = (rec, loc)
        by_key[k] = loc
        out.append(rec)
    examples = report.duplicate_examples[first_example:]
    if examples:
        log.warning("%d duplicates removed before splitting (first: %s)", len(examples), "; ".join(examples[:3]))
    return out



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


class GeneratedDataExists(UserError, FileExistsError):
    """Generated data would replace a different existing file; the message names it and says how to proceed."""


def write_generated(path, text: str, overwrite: bool = False) -> str:
    """Write generated data (demonstrations, QA pairs, fetched articles) to ``path``; returns what happened.

    ``"written"`` for a new file; ``"unchanged"`` when ``path`` already holds exactly ``text`` (a cached rerun);
    otherwise GeneratedDataExists, unless ``overwrite``: then the old file is kept as ``<name>.bak`` (``.bak.1``,
    ... when that exists) and ``"replaced"`` is returned.
    """
    path = Path(path)
    data = text.encode("utf-8")
    if path.exists():
        if path.read_bytes() == data:
            return "unchanged"
        if not overwrite:
            raise GeneratedDataExists(
                f"{path} exists and differs from the newly generated data; not overwritten. Pass --overwrite "
                f"(overwrite=True) to replace it (the old file is kept as {path.name}.bak), or move it away first")
        backup, k = path.with_name(path.name + ".bak"), 0
        while backup.exists():
            k += 1
            backup = path.with_name(f"{path.name}.bak.{k}")
        path.replace(backup)
        log.warning("%s: replaced; the previous file is %s", path, backup)
        status = "replaced"
    else:
        status = "written"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return status
