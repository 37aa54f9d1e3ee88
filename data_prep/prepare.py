"""Prepare a task's splits as JSONL files (and, where the task needs it, generate its demonstrations / QA pairs).

    python -m data_prep.prepare --task science --data-dir D --output data/prepared
    python -m data_prep.prepare --task science --data-dir D --generate --model gpt-4o --output data/prepared
    python -m data_prep.prepare --task knowledge --data-dir D --fetch-articles --generate --model gpt-5 --output ...

Writes ``<output>/<task>/{train,val,test}.jsonl`` (one schema record per line, keys sorted: byte-identical for the
same inputs and seed) and ``<output>/<task>/manifest.json`` (source, seed, counts, SHA-256 of every file, and per
split what was skipped, de-duplicated and left out), so a run can record exactly which data it used. Generation
talks to an OpenAI-compatible endpoint (``--base-url`` or ``$OPENAI_BASE_URL``, key in ``$OPENAI_API_KEY``) through
``sdft.llm.CachedChatClient``: every request is cached on disk, a rerun sends none. Generated data (demonstrations,
QA pairs, fetched articles) never replaces a different existing file unless ``--overwrite`` is given (then the old
file is kept as ``<name>.bak``); a rerun that generates the same data leaves the file as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

from data_prep import knowledge, science
from data_prep.registry import load_task
from data_prep.schema import SplitReport
from data_prep.sources import GeneratedDataExists, resolve_data_dir, seeded_split, write_generated, write_jsonl
from sdft.errors import reported_as_one_line
from sdft.llm import CachedChatClient

log = logging.getLogger("data_prep")


def _client(args):
    if not args.model:
        raise SystemExit("--generate needs --model (the OpenAI-compatible model name, e.g. gpt-4o)")
    return CachedChatClient(model=args.model, base_url=args.base_url, cache_path=args.cache,
                            max_concurrency=args.concurrency, temperature=args.temperature)


def generate_science(args, data_dir: Path | None) -> dict:
    train = seeded_split(science.load_all(data_dir, args.skip_invalid), "train")
    client = _client(args)
    demos, report = science.generate_demonstrations(train, client, max_samples=args.max_samples,
                                                    temperature=args.temperature, progress="science demos")
    path = Path(args.demos) if args.demos else science.demonstrations_path(data_dir)
    written = _write_or_refuse(lambda: science.write_demonstrations(path, demos, args.model, overwrite=args.overwrite))
    print(report)
    print(f"{path}: {written}")
    return {"demonstrations": str(path), "file": written, "model": args.model, **report.to_dict(),
            "requests_sent": client.n_requests, "cache_hits": client.n_cache_hits}


def generate_knowledge(args, data_dir: Path | None) -> dict:
    if data_dir is None:
        raise SystemExit("knowledge: --generate needs --data-dir (the QA pairs are written under it)")
    articles = knowledge.read_articles(knowledge.find_articles(data_dir))
    client = _client(args)
    rows, report = knowledge.generate_qa(articles, client, n_indirect=args.n_indirect, progress="knowledge QA")
    path = data_dir / "wiki_disasters" / knowledge.QA_FILE
    written = _write_or_refuse(lambda: knowledge.write_qa(path, rows, overwrite=args.overwrite))
    print(report)
    print(f"{path}: {written}")
    return {"qa_pairs": str(path), "file": written, "model": args.model, "per_article": report.per_article,
            "requests_sent": client.n_requests, "cache_hits": client.n_cache_hits}


def _write_or_refuse(write) -> str:
    """Run a writer of generated data; an existing different file ends the command with the writer's message."""
    try:
        return write()
    except GeneratedDataExists as err:
        raise SystemExit(f"error: {err}") from None


def fetch_articles(data_dir: Path | None, overwrite: bool = False) -> dict:
    if data_dir is None:
        raise SystemExit("--fetch-articles needs --data-dir (the articles are written under it)")
    articles = knowledge.fetch_wikipedia_articles()
    path = data_dir / "wiki_disasters" / knowledge.ARTICLE_FILES[0]
    text = json.dumps(articles, ensure_ascii=False, indent=1)
    written = _write_or_refuse(lambda: write_generated(path, text, overwrite=overwrite))
    return {"articles": str(path), "file": written, "count": len(articles)}


def write_splits(task: str, out_dir: Path, data_dir, seed: int, n: int | None, skip_invalid: bool,
                 splits=("train", "val", "test")) -> dict:
    """Write every split of ``task``; returns the manifest entries (counts, SHA-256 and the split's
    ``SplitReport``: files read, skipped, duplicates removed, left out)."""
    files = {}
    for split in splits:
        report = SplitReport()
        records = load_task(task, split, seed=seed, n=n, data_dir=data_dir, skip_invalid=skip_invalid, report=report)
        path = out_dir / f"{split}.jsonl"
        count = write_jsonl(path, records)
        files[split] = {"file": path.name, "records": count,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "report": report.to_dict()}
        print(f"{task}/{split}: {count} records -> {path}")
        if report.skipped or report.duplicate_rows or report.duplicate_questions:
            print(f"  {report}")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of a user error too (or set SDFT_DEBUG=1)")
    p.add_argument("--task", required=True, help="science | tooluse | medical | medical_answer_only | knowledge | "
                   "knowledge_ood, or any registered task (data_prep.registry)")
    p.add_argument("--data-dir", default=None, help="local mirror (layout: data_prep/README.md); default: the hub")
    p.add_argument("--output", required=True, help="folder for <task>/{train,val,test}.jsonl and manifest.json")
    p.add_argument("--seed", type=int, default=0, help="picks the subsample when --n is given")
    p.add_argument("--n", type=int, default=None, help="at most this many records per split")
    p.add_argument("--splits", default="train,val,test")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip malformed raw records (counted in manifest.json and reported)")
    g = p.add_argument_group("generation (science demonstrations, knowledge QA pairs)")
    g.add_argument("--generate", action="store_true", help="generate before writing the splits")
    g.add_argument("--fetch-articles", action="store_true", help="knowledge: fetch the articles from Wikipedia")
    g.add_argument("--model", default=None, help="model name at the endpoint (paper: gpt-4o science, gpt-5 QA)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    g.add_argument("--cache", default=None, help="SQLite request cache (default under $SDFT_CACHE)")
    g.add_argument("--concurrency", type=int, default=8)
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of generation")
    g.add_argument("--max-samples", type=int, default=8, help="science: samples per question at most")
    g.add_argument("--n-indirect", type=int, default=10, help="knowledge: indirect (OOD) questions per article")
    g.add_argument("--demos", default=None, help="science: demonstrations file (default: see science.py)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing generated data that differs (the old file is kept as <name>.bak); "
                        "without it such a file is left alone and the command stops")
    return p


def main(argv: list[str] | None = None) -> dict:
    with reported_as_one_line(argv):  # error: <file or endpoint>: <what> (sdft.errors)
        return _main(argv)


def _main(argv: list[str] | None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_dir = resolve_data_dir(args.data_dir)
    manifest: dict = {"task": args.task, "data_dir": str(data_dir) if data_dir else None,
                      "source": "mirror" if data_dir else "hub", "seed": args.seed, "n": args.n,
                      "command": "python -m data_prep.prepare " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.fetch_articles:
        manifest["fetch"] = fetch_articles(data_dir, args.overwrite)
    if args.generate:
        if args.task == "science":
            manifest["generation"] = generate_science(args, data_dir)
        elif args.task.startswith("knowledge"):
            manifest["generation"] = generate_knowledge(args, data_dir)
        else:
            raise SystemExit(f"--generate applies to science and knowledge, not {args.task!r}")
    out_dir = Path(args.output) / args.task
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest["files"] = write_splits(args.task, out_dir, data_dir, args.seed, args.n, args.skip_invalid,
                                     tuple(s for s in args.splits.split(",") if s))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


if __name__ == "__main__":
    main()
