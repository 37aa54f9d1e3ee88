"""General-purpose instruction prompts, not from any training task: the prompts of SFT + re-invoke's stage 2.

``load_general_prompts(source)`` returns a list of prompts, each a list of chat messages ending with a user turn.

Sources:
  * ``"embedded"`` -- the 40 prompts below, written for this repository (writing, explanation, reasoning,
    arithmetic, coding, advice, formatting and instruction-following requests). Offline; for smoke and mini.
  * ``"hub:<dataset id>"`` -- the user turns of a chat dataset on the Hugging Face hub, read in streaming mode.
    The paper preset uses ``hub:allenai/tulu-3-sft-mixture`` (the Tulu 3 SFT mixture, the general chat prompt set
    of Thinking Machines' on-policy distillation recipes); any dataset with a ``messages`` column of chat turns
    (or a ``prompt`` / ``instruction`` text column) works.
  * ``"file:<path>"`` -- the same rows from a local JSON array or JSONL file (an offline mirror of the hub set,
    e.g. ``<data-dir>/general_prompts/tulu-3-sft-mixture.jsonl``); rows without a usable user turn are counted
    and reported, and ``n`` prompts are drawn with the seed (all of them when ``n`` is None).

``parse_source`` reads a source's form and ``source_problem`` also checks that a ``file:`` path is a file, both
without reading or downloading anything: ``sdft.config.build_config`` runs them on ``reinvoke_prompts``
(``sdft.validation``), so a malformed source fails when the config is built, not after SFT's stage 1.
"""

from __future__ import annotations

import os
import random
import re

from data_prep.sources import read_json_records

Messages = list[dict[str, str]]

EMBEDDED_GENERAL_PROMPTS: tuple[str, ...] = (
    "Write a short poem about the first snow of winter.",
    "Explain in two sentences why the sky looks blue during the day.",
    "Give me three tips for staying focused while studying.",
    "What is the difference between a virus and a bacterium?",
    "Summarize the plot of a fairy tale of your choice in one paragraph.",
    "Write a polite email asking a colleague to reschedule a meeting to Friday.",
    "If a train travels 60 kilometres in 45 minutes, what is its average speed in km/h?",
    "Write a Python function that returns the largest element of a list without using max().",
    "List four renewable sources of energy and one advantage of each.",
    "Translate 'Good morning, how are you?' into French and Spanish.",
    "Describe how a refrigerator keeps food cold, for a ten-year-old.",
    "What are the main causes of inflation? Answer in at most five bullet points.",
    "Suggest a name for a small bakery that specialises in sourdough bread, and explain your choice.",
    "Write a haiku about a cat sleeping in the sun.",
    "Is 221 a prime number? Explain your reasoning.",
    "Give a recipe for a simple vegetable soup with at most six ingredients.",
    "Explain what a hash table is and when you would use one.",
    "Rewrite this sentence in the passive voice: 'The committee approved the new budget.'",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Compare cats and dogs as pets in a short table with three rows.",
    "Write a limerick about a forgetful robot.",
    "Explain the rules of tic-tac-toe in plain language.",
    "A shirt costs 25 dollars after a 20 percent discount. What was the original price?",
    "Write a SQL query that counts the number of orders per customer in a table named orders.",
    "Give me a motivational quote and explain what it means.",
    "Describe the water cycle in four steps.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Write a short dialogue between a customer and a librarian looking for a mystery novel.",
    "Explain the difference between weather and climate.",
    "Answer in exactly three words: what makes a good friend?",
    "Write a JavaScript snippet that reverses a string.",
    "What are two benefits and two risks of social media for teenagers?",
    "Sort these numbers from smallest to largest: 42, 7, 19, 3, 88, 25.",
    "Explain photosynthesis in one paragraph without using the word 'sunlight'.",
    "Write a thank-you note to a neighbour who watered my plants while I was away.",
    "What is the Pythagorean theorem? Give an example with numbers.",
    "Suggest five questions to ask at the end of a job interview.",
    "Write a two-sentence horror story.",
    "Respond in JSON with the keys 'city' and 'country' for the Eiffel Tower's location.",
    "Why do we have leap years? Keep the answer under 60 words.",
)


def _embedded(n: int | None, seed: int) -> list[Messages]:
    prompts = [[{"role": "user", "content": text}] for text in EMBEDDED_GENERAL_PROMPTS]
    if n is None:
        return prompts
    rng = random.Random(f"general_prompts:{seed}")
    order = list(range(len(prompts)))
    rng.shuffle(order)
    # n larger than the set cycles through it in a fresh order each pass
    out: list[Messages] = []
    while len(out) < n:
        out.extend(prompts[i] for i in order[: n - len(out)])
        rng.shuffle(order)
    return out


def _user_turns(row: dict) -> Messages | None:
    messages = row.get("messages") or row.get("conversations")
    if isinstance(messages, list) and messages:
        head = []
        for m in messages:  # keep system turns, stop at the first user turn
            role = m.get("role") or m.get("from")
            content = m.get("content") or m.get("value")
            if not isinstance(content, str):
                return None
            if role == "system":
                head.append({"role": "system", "content": content})
            elif role in ("user", "human"):
                return head + [{"role": "user", "content": content}]
        return None
    for key in ("prompt", "instruction", "question"):
        if isinstance(row.get(key), str) and row[key].strip():
            return [{"role": "user", "content": row[key]}]
    return None


def _hub(dataset_id: str, n: int | None, seed: int, split: str = "train") -> list[Messages]:
    from datasets import load_dataset

    if n is None:
        raise ValueError("a hub prompt set needs n (the number of prompts to read)")
    stream = load_dataset(dataset_id, split=split, streaming=True).shuffle(seed=seed, buffer_size=10_000)
    out: list[Messages] = []
    for row in stream:
        prompt = _user_turns(row)
        if prompt is not None:
            out.append(prompt)
        if len(out) >= n:
            break
    if not out:
        raise ValueError(f"no usable user prompts in {dataset_id}")
    return out


def _file(path: str, n: int | None, seed: int) -> list[Messages]:
    import logging

    prompts, unusable = [], []
    for where, row in read_json_records(path):
        prompt = _user_turns(row) if isinstance(row, dict) else None
        if prompt is None:
            unusable.append(where)
        else:
            prompts.append(prompt)
    if unusable:
        logging.getLogger("data_prep").warning("%s: %d rows without a usable user turn skipped (first: %s)",
                                               path, len(unusable), ", ".join(unusable[:5]))
    if not prompts:
        raise ValueError(f"no usable user prompts in {path}")
    if n is None or n >= len(prompts):
        return prompts
    rng = random.Random(f"general_prompts:{seed}")
    return [prompts[i] for i in sorted(rng.sample(range(len(prompts)), n))]


SOURCE_FORMS = "'embedded', 'hub:<owner>/<dataset>' or 'file:<path>'"
# A hub repository id: ``name`` or ``owner/name``, letters, digits, '-', '_' and '.', not starting or ending with
# '-' or '.', no '--' or '..' (the hub's own rule), at most 96 characters per part.
_HUB_PART = re.compile(r"^(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


def hub_id_problem(dataset_id: str) -> str | None:
    """Why ``dataset_id`` is not of the form of a hub repository id (``name`` or ``owner/name``), or None."""
    if not dataset_id:
        return "no dataset id after 'hub:' (write hub:<owner>/<dataset>, e.g. hub:allenai/tulu-3-sft-mixture)"
    parts = dataset_id.split("/")
    if len(parts) > 2 or not all(_HUB_PART.match(p) for p in parts):
        return (f"{dataset_id!r} is not a hub dataset id (<owner>/<dataset>: letters, digits, '-', '_', '.'; "
                "not starting or ending with '-' or '.')")
    return None


def parse_source(source) -> tuple[str, str]:
    """``(kind, argument)`` of a general prompt source: ``("embedded", "")``, ``("hub", dataset id)`` or
    ``("file", path)``; a ``ValueError`` saying what is wrong with its form otherwise. Reads and downloads
    nothing: whether a ``file:`` path exists is :func:`source_problem`'s question."""
    if not isinstance(source, str):
        raise ValueError(f"a general prompt source is a string ({SOURCE_FORMS}), got {type(source).__name__}")
    if source == "embedded":
        return "embedded", ""
    if source.startswith("hub:"):
        problem = hub_id_problem(source[len("hub:"):])
        if problem:
            raise ValueError(problem)
        return "hub", source[len("hub:"):]
    if source.startswith("file:"):
        if not source[len("file:"):].strip():
            raise ValueError("no path after 'file:' (write file:<path to a JSON or JSONL file>)")
        return "file", source[len("file:"):]
    hint = ""
    if source == "hub":
        hint = " (a hub source names its dataset: hub:<owner>/<dataset>, e.g. hub:allenai/tulu-3-sft-mixture)"
    elif source.endswith((".json", ".jsonl")) or "/" in source:
        hint = f" (a local file is written file:{source})"
    raise ValueError(f"unknown general prompt source {source!r}; expected {SOURCE_FORMS}{hint}")


def source_problem(source) -> str | None:
    """What is wrong with ``source`` before any prompt is read -- its form, or a ``file:`` path that is not a file
    here (relative paths from the working directory, as :func:`load_general_prompts` reads them) -- or None.
    A hub source is checked for its form only: nothing is downloaded."""
    try:
        kind, arg = parse_source(source)
    except ValueError as err:
        return str(err)
    if kind == "file" and not os.path.isfile(os.path.expanduser(arg)):
        what = "a directory, not a file" if os.path.isdir(os.path.expanduser(arg)) else "no such file"
        return f"{os.path.abspath(os.path.expanduser(arg))}: {what}"
    return None


def load_general_prompts(source: str = "embedded", n: int | None = None, seed: int = 0) -> list[Messages]:
    """``n`` general-purpose prompts (all of the embedded set when ``n`` is None) from ``source``."""
    kind, arg = parse_source(source)
    if kind == "embedded":
        return _embedded(n, seed)
    if kind == "hub":
        return _hub(arg, n, seed)
    return _file(os.path.expanduser(arg), n, seed)
