"""Knowledge acquisition: Wikipedia articles on natural disasters of 2025 (after the base model's cut-off).

* Corpus: the nine articles of ``DISASTER_TITLES``, read from a local folder (``wiki_disasters/articles.json`` or
  ``data.json``: a JSON array of ``{"title", "text", ...}``; or ``wiki_disasters/articles/*.txt``, title = file
  name) or fetched once from the Wikipedia API (:func:`fetch_wikipedia_articles`, plain-text extracts).
* QA pairs: per article, an OpenAI-compatible model (paper: GPT-5) answers the paper's prompt (Appendix B.3,
  ``QA_PROMPT``, verbatim) with ``Question: ... / Answer: ...`` blocks; parsed and de-duplicated (normalized question
  text, within and across articles). Out-of-distribution "indirect" questions -- answerable from an article but
  not naming its event -- come from a second prompt (``INDIRECT_PROMPT``, ours: the paper does not print one).
  Both are written to ``wiki_disasters/qa_pairs.jsonl`` (:func:`generate_qa`).
* Splits: the direct pairs of each article are split ~75 / 5 / 20 (seeded, per article): task ``knowledge``. The
  indirect questions are the test split of task ``knowledge_ood`` (its train / val are those of ``knowledge``);
  ``meta["kind"]`` says ``"direct"`` or ``"indirect"``. Every record carries its article in
  ``meta["article"]`` (oracle RAG, CPT, and the teacher contexts of Fig. 7).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.schema import RecordError, SplitReport
from data_prep.scorers import normalize_text
from data_prep.sources import (SPLIT_SEED, DataSourceError, convert_all, read_json_records, read_text, require_field,
                               seeded_split, stable_id, write_generated)

log = logging.getLogger("data_prep")

TASK = "knowledge"
DISASTER_TITLES = (
    "2025 Myanmar earthquake",
    "2025 Kamchatka earthquake",
    "2025 Uttarakhand flash flood",
    "Typhoon Kalmaegi",
    "Tropical Storm Wipha (2025)",
    "Cyclone Ditwah",
    "Hurricane Melissa",
    "2025 Kentwood–Carson tornado",
    "July 2025 Central Texas floods",
)
ARTICLE_FILES = ("articles.json", "data.json")
QA_FILE = "qa_pairs.jsonl"
MIRROR_FILES = f"wiki_disasters/{ARTICLE_FILES[0]} (the articles) and wiki_disasters/{QA_FILE} (the QA pairs)"
WIKIPEDIA_API = "https://en.wikipedia.org/w/api.php"

# Appendix B.3 of the paper, verbatim (including its typos): the system turn; the article is the user turn.
QA_PROMPT = (
    "You are a helpful assistant that helps me write questions for an exam. You will be given a wiki article and "
    "you will need to write 100 question on the content of the wiki article. The question should require "
    "recalling multiple pieces of information from the wiki article. Do not repeat the same question\n"
    "The questions should be in the following format:\n"
    "Question: <question>\n"
    "Answer: <answern>"
)

INDIRECT_PROMPT = (
    "You will be given a Wikipedia article about a natural disaster of 2025. Write {n} questions whose answers "
    "depend on facts from the article but which do not name the disaster itself: ask about the world in 2025 "
    "instead (for example: which countries needed international humanitarian aid in 2025, or which region had its "
    "strongest earthquake in a century that year). Each question must have a short, unambiguous answer that the "
    "article supports.\n"
    "Write each one in this format:\n"
    "Question: <question>\n"
    "Answer: <answer>"
)

_QA_RE = re.compile(r"^\s*(?:\d+[.)]\s*)?\**Question\**\s*\d*\s*:\s*(?P<q>.+?)\s*\n\s*\**Answer\**\s*\d*\s*:\s*(?P<a>.+?)\s*"
                    r"(?=\n\s*(?:\d+[.)]\s*)?\**Question\**\s*\d*\s*:|\Z)", re.DOTALL | re.MULTILINE | re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
# Articles
# --------------------------------------------------------------------------------------------------


def read_articles(path: Path) -> list[dict]:
    """Articles from a JSON array / JSONL file of ``{"title", "text"}`` or a folder of ``<title>.txt`` files. A title
    given twice is a RecordError naming the file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DataSourceError(f"task {TASK!r}: no *.txt articles in {path}")
        return [{"title": f.stem, "text": read_text(f)} for f in files]
    out, seen = [], {}
    for where, obj in read_json_records(path):
        title = require_field(obj, "title", str(path), where)
        text = require_field(obj, "text", str(path), where)
        if title in seen:
            raise RecordError(str(path), where, "title", f"the article {title!r} is also {seen[title]}")
        seen[title] = where
        out.append({"title": title, "text": text, "id": str(obj.get("id", "")), "url": obj.get("url", "")})
    return out


def find_articles(data_dir: Path) -> Path:
    folder = data_dir / "wiki_disasters"
    for candidate in [folder / name for name in ARTICLE_FILES] + [folder / "articles"]:
        if candidate.exists():
            return candidate
    raise DataSourceError(f"task {TASK!r}: no articles in {folder}; the local mirror needs {MIRROR_FILES} "
                          "(or fetch them: python -m data_prep.prepare --task knowledge --fetch-articles --data-dir D)")


def fetch_wikipedia_articles(titles=DISASTER_TITLES, timeout: float = 60.0) -> list[dict]:
    """Plain-text extracts of ``titles`` from the Wikipedia API (needs the network; never called by the tests)."""
    import urllib.parse
    import urllib.request

    out = []
    for title in titles:
        query = urllib.parse.urlencode({"action": "query", "prop": "extracts|info", "explaintext": 1, "inprop": "url",
                                        "redirects": 1, "format": "json", "formatversion": 2, "titles": title})
        req = urllib.request.Request(f"{WIKIPEDIA_API}?{query}",
                                     headers={"User-Agent": "sdft-reproduction/0.1 (research; data preparation)"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            pages = json.load(resp)["query"]["pages"]
        page = pages[0]
        if page.get("missing") or not page.get("extract"):
            raise DataSourceError(f"Wikipedia has no article titled {title!r}")
        out.append({"id": str(page["pageid"]), "title": page["title"], "url": page.get("fullurl", ""),
                    "text": page["extract"]})
    return out


# --------------------------------------------------------------------------------------------------
# QA generation
# --------------------------------------------------------------------------------------------------


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs of a ``Question: ... / Answer: ...`` completion (numbering, bold tolerated)."""
    pairs = []
    for m in _QA_RE.finditer(text):
        q, a = m.group("q").strip().strip("*").strip(), m.group("a").strip().strip("*").strip()
        if q and a:
            pairs.append((q, a))
    return pairs


def question_key(question: str) -> str:
    return normalize_text(question)


def dedupe_pairs(rows: list[dict]) -> tuple[list[dict], int]:
    """First occurrence of every question (normalized: case, accents, punctuation, articles); (kept, n removed)."""
    seen, kept = set(), []
    for row in rows:
        key = question_key(row["question"])
        if key in seen:
            continue
        seen.add(key)
        kept.append(row)
    return kept, len(rows) - len(kept)


@dataclass
class QAReport:
    per_article: dict[str, dict] = field(default_factory=dict)  # title -> {"direct", "indirect", "duplicates"}

    def __str__(self) -> str:
        lines = [f"  {t}: {c['direct']} direct, {c['indirect']} indirect, {c['duplicates']} duplicates removed"
                 for t, c in self.per_article.items()]
        total = sum(c["direct"] + c["indirect"] for c in self.per_article.values())
        return f"knowledge QA pairs: {total} after de-duplication\n" + "\n".join(lines)


def generate_qa(articles: list[dict], client, n_indirect: int = 10, temperature: float | None = None,
                progress: str | None = None) -> tuple[list[dict], QAReport]:
    """QA rows ``{"article", "question", "answer", "kind"}`` for every article (direct with the paper's prompt,
    indirect with ``INDIRECT_PROMPT``), de-duplicated. ``client`` is an ``sdft.llm.CachedChatClient``."""
    direct_convs = [[{"role": "system", "content": QA_PROMPT}, {"role": "user", "content": a["text"]}]
                    for a in articles]
    replies = client.complete_many(direct_convs, temperature=temperature, progress=progress)
    indirect = ([[] for _ in articles] if n_indirect <= 0 else client.complete_many(
        [[{"role": "system", "content": INDIRECT_PROMPT.format(n=n_indirect)}, {"role": "user", "content": a["text"]}]
         for a in articles], temperature=temperature, progress=progress))
    rows, report = [], QAReport()
    for art, direct_out, indirect_out in zip(articles, replies, indirect):
        raw = [{"article": art["title"], "question": q, "answer": a, "kind": "direct"}
               for q, a in parse_qa_pairs(direct_out[0])]
        raw += [{"article": art["title"], "question": q, "answer": a, "kind": "indirect"}
                for q, a in (parse_qa_pairs(indirect_out[0])[:n_indirect] if indirect_out else [])]
        if not raw:
            log.warning("knowledge: no QA pairs could be parsed for %r", art["title"])
        rows += raw
        report.per_article[art["title"]] = {"raw": len(raw)}
    rows, _ = dedupe_pairs(rows)
    for title, counts in report.per_article.items():
        mine = [r for r in rows if r["article"] == title]
        counts.update(direct=sum(r["kind"] == "direct" for r in mine), indirect=sum(r["kind"] == "indirect" for r in mine))
        counts["duplicates"] = counts.pop("raw") - len(mine)
    return rows, report


# --------------------------------------------------------------------------------------------------
# QA files and records
# --------------------------------------------------------------------------------------------------


def read_qa(path: Path, articles: list[dict], skip_invalid: bool = False,
            report: SplitReport | None = None) -> list[dict]:
    """QA rows from a JSONL file: ours (``article`` = title, ``question``, ``answer``, optional ``kind``), or the
    instruction style ``{"id": <article page id>, "input": question, "output": answer}``. A malformed row is a
    RecordError, or with ``skip_invalid`` skipped and counted in ``report``."""
    by_title = {a["title"]: a for a in articles}
    by_id = {a.get("id"): a for a in articles if a.get("id")}
    source = str(path)

    def convert(obj, where):
        if isinstance(obj, dict) and "input" in obj and "question" not in obj:
            art = by_id.get(str(obj.get("id")))
            if art is None:
                raise RecordError(source, where, "id", f"no article with id {obj.get('id')!r}")
            question = require_field(obj, "input", source, where)
            answer = require_field(obj, "output", source, where)
            kind = obj.get("kind", "direct")
        else:
            title = require_field(obj, "article", source, where)
            if title not in by_title:
                raise RecordError(source, where, "article", f"no article titled {title!r}")
            art = by_title[title]
            question = require_field(obj, "question", source, where)
            answer = require_field(obj, "answer", source, where)
            kind = obj.get("kind", "direct")
        if kind not in ("direct", "indirect"):
            raise RecordError(source, where, "kind", f"expected 'direct' or 'indirect', got {kind!r}")
        return {"article": art["title"], "question": question.strip(), "answer": answer.strip(), "kind": kind}

    rows, skips = convert_all(read_json_records(path), convert, source, skip_invalid)
    if report is not None:
        report.absorb(skips)
    return rows


def to_record(row: dict, article_text: str) -> dict:
    return {
        "id": stable_id(TASK, row["article"], row["question"]),
        "task": TASK,
        "prompt": [{"role": "user", "content": row["question"]}],
        "demonstration": row["answer"],
        "reference": row["answer"],
        "meta": {"question": row["question"], "article_title": row["article"], "article": article_text,
                 "kind": row["kind"]},
    }


def split_records(rows: list[dict], articles: list[dict], split: str, seed: int = SPLIT_SEED,
                  ood: bool = False, report: SplitReport | None = None) -> list[dict]:
    """Direct pairs split ~75/5/20 within each article; with ``ood`` the test split is the indirect questions.
    Duplicate questions (:func:`dedupe_pairs`) are removed first and counted in ``report``: identical rows as
    duplicate rows, the others (the same question, a reworded answer: the first is kept) as duplicate questions."""
    identical = len(rows) - len({(r["article"], r["question"], r["answer"], r["kind"]) for r in rows})
    rows, removed = dedupe_pairs(rows)
    if report is not None:
        report.duplicate_rows += identical
        report.duplicate_questions += removed - identical
    if removed:
        log.info("knowledge: %d duplicate questions removed", removed)
    text = {a["title"]: a["text"] for a in articles}
    if ood and split == "test":
        return [{**to_record(r, text[r["article"]]), "task": "knowledge_ood"} for r in rows if r["kind"] == "indirect"]
    out = []
    for art in articles:
        direct = [to_record(r, text[art["title"]]) for r in rows if r["article"] == art["title"] and r["kind"] == "direct"]
        out += seeded_split(direct, split, seed=seed)
    return out


def load(split: str, data_dir: Path | None, qa_file: Path | None = None, ood: bool = False,
         skip_invalid: bool = False, report: SplitReport | None = None) -> list[dict]:
    if data_dir is None:
        raise DataSourceError(
            f"task {TASK!r} has no hub source: pass --data-dir D where D holds {MIRROR_FILES}. Build it with "
            "`python -m data_prep.prepare --task knowledge --fetch-articles --generate --model gpt-5 --data-dir D` "
            "(network + OPENAI_BASE_URL / OPENAI_API_KEY), see data_prep/README.md.")
    articles_path = find_articles(data_dir)
    articles = read_articles(articles_path)
    if report is not None:
        report.add_source(articles_path)
    path = Path(qa_file) if qa_file else data_dir / "wiki_disasters" / QA_FILE
    if not path.exists():
        raise DataSourceError(
            f"task {TASK!r}: {path} not found. Generate the QA pairs once: `python -m data_prep.prepare --task knowledge "
            f"--generate --model gpt-5 --data-dir {data_dir}` (OPENAI_BASE_URL / OPENAI_API_KEY).")
    return split_records(read_qa(path, articles, skip_invalid, report), articles, split, ood=ood, report=report)


def write_qa(path: Path, rows: list[dict], overwrite: bool = False) -> str:
    """Write the QA pairs file; an existing different file is replaced only with ``overwrite``
    (``sources.write_generated``: returns ``"written"``, ``"unchanged"`` or ``"replaced"``)."""
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    return write_generated(path, text, overwrite=overwrite)
