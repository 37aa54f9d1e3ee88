"""Embedded mini tasks: procedurally generated, with known answers, in the record schema.

They run offline and are small enough for SmolLM2-135M on a CPU. Every generator is deterministic
given its seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random

from data_prep.scorers import normalize_text

# --------------------------------------------------------------------------------------------------
# Splits: every record is drawn at random, and its question decides its split, so no question of the test or
# validation split is ever a training question, whatever the sizes asked for.
# --------------------------------------------------------------------------------------------------

SPLIT_BUCKETS = {"train": range(0, 7), "val": range(7, 8), "test": range(8, 10)}  # of 10, by question hash


def split_of(question: str) -> str:
    """The split a question belongs to (a stable hash of its text: 70% train, 10% val, 20% test)."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10
    return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def draw_split(draw, n: int, split: str, seed: int, task: str, max_tries: int = 200_000) -> list[dict]:
    """``n`` records of ``split`` with distinct questions: ``draw(rng, i)`` makes a candidate record (its
    ``meta.question`` decides the split) until ``n`` are kept. Deterministic given (task, seed, split)."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_BUCKETS)}, got {split!r}")
    rng = random.Random(f"{task}:{seed}:{split}")
    records, seen = [], set()
    for _ in range(max_tries):
        if len(records) == n:
            return records
        record = draw(rng, len(records))
        question = record["meta"]["question"]
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        records.append(record)
    raise ValueError(f"{task}: only {len(records)} distinct {split} questions found in {max_tries} draws, "
                     f"{n} asked for")


def _record(task: str, i: int, system: str, user: str, demonstration: str, reference, meta: dict) -> dict:
    """A record of the repository's schema (``data_prep.schema``): a system and a user message."""
    return {"id": f"{task}-{i:04d}", "task": task,
            "prompt": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "demonstration": demonstration, "reference": reference, "meta": meta}


# --------------------------------------------------------------------------------------------------
# Tool use: one tool per query, described in the prompt; the answer is its call in the ReAct format of
# ToolAlpaca (Action / Action Input). Six tools, their arguments drawn from lists.
# --------------------------------------------------------------------------------------------------

_CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Rome", "Quito", "Seoul", "Accra", "Hanoi", "Dakar",
           "Berlin", "Nairobi", "Madrid", "Toronto", "Sydney", "Bogota", "Lisbon", "Manila"]
_CURRENCIES = ["USD", "EUR", "JPY", "GBP", "INR", "BRL", "CAD", "CHF"]
_LANGUAGES = ["French", "Spanish", "German", "Italian", "Japanese", "Korean", "Swahili", "Portuguese", "Dutch",
              "Greek", "Turkish", "Polish"]
_PHRASES = ["good morning", "thank you very much", "where is the station", "see you tomorrow", "happy birthday",
            "the bill, please", "I am lost", "how much is this", "good night", "I like this song", "open the window",
            "it is raining", "call a doctor", "where is the museum", "welcome home", "the food is delicious"]
_LABELS = ["tea", "laundry", "meeting", "pasta", "rice", "eggs", "oven", "bus", "bread", "nap", "soup", "cake",
           "yoga", "homework", "pizza", "coffee"]
_RESTAURANTS = ["Blue Fig", "Casa Luna", "The Old Mill", "Saffron", "Harbor Grill", "Kumo", "Olive Tree"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

# name: (signature shown in the prompt, question from the arguments, argument drawer)
_TOOLS = {
    "get_weather": (
        "get_weather(city: string, day: string, unit: 'celsius' | 'fahrenheit') -- weather forecast of a city",
        lambda a: f"What is the weather in {a['city']} on {a['day']} in {a['unit']}?",
        lambda rng: {"city": rng.choice(_CITIES), "day": rng.choice(_DAYS),
                     "unit": rng.choice(["celsius", "fahrenheit"])}),
    "convert_currency": (
        "convert_currency(amount: number, source: string, target: string) -- convert money between currencies",
        lambda a: f"How much is {a['amount']} {a['source']} in {a['target']}?",
        lambda rng: dict(zip(("amount", "source", "target"),
                             (rng.choice([5, 10, 20, 50, 75, 100, 250, 500]), *rng.sample(_CURRENCIES, 2))))),
    "translate": (
        "translate(text: string, language: string) -- translate a short text",
        lambda a: f"Translate \"{a['text']}\" into {a['language']}.",
        lambda rng: {"text": rng.choice(_PHRASES), "language": rng.choice(_LANGUAGES)}),
    "set_timer": (
        "set_timer(minutes: integer, label: string) -- start a kitchen timer",
        lambda a: f"Set a {a['minutes']}-minute timer for {a['label']}.",
        lambda rng: {"minutes": rng.choice([1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 45]), "label": rng.choice(_LABELS)}),
    "book_table": (
        "book_table(restaurant: string, people: integer, day: string) -- reserve a table",
        lambda a: f"Book a table for {a['people']} at {a['restaurant']} on {a['day']}.",
        lambda rng: {"restaurant": rng.choice(_RESTAURANTS), "people": rng.randint(1, 8), "day": rng.choice(_DAYS)}),
    "find_flights": (
        "find_flights(origin: string, destination: string) -- list direct flights between two cities",
        lambda a: f"Find flights from {a['origin']} to {a['destination']}.",
        lambda rng: dict(zip(("origin", "destination"), rng.sample(_CITIES, 2)))),
}

TOOL_SYSTEM = (
    "You can call one tool. Answer with exactly two lines:\n"
    "Action: <tool name>\nAction Input: <JSON arguments>"
)


def _tool_record(rng: random.Random, i: int) -> dict:
    name = sorted(_TOOLS)[i % len(_TOOLS)]  # balanced: the tools in turn
    signature, ask, draw_args = _TOOLS[name]
    arguments = draw_args(rng)
    question = ask(arguments)
    return _record("embedded_tool", i, TOOL_SYSTEM, f"Tool: {signature}.\nQuestion: {question}",
                   f"Action: {name}\nAction Input: {json.dumps(arguments)}", [{"name": name, "arguments": arguments}],
                   {"question": question})


def tool_calls(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """Tool calls in the ReAct answer format of ToolAlpaca (Action / Action Input), six tools."""
    return draw_split(_tool_record, n, split, seed, "embedded_tool")


# --------------------------------------------------------------------------------------------------
# Science: four-choice chemistry questions in the answer format of the real Science Q&A task.
# --------------------------------------------------------------------------------------------------

# The real task asks for <reasoning> and <answer> tags; SmolLM2-135M copies a demonstration's <answer> tag but
# not a <reasoning> wrapper (teacher accuracy 0% with it, 42% without, n=12), so the stand-in keeps only <answer>.
SCIENCE_SYSTEM = (
    "Answer the multiple-choice question. Explain your reasoning in one sentence, "
    "then give only the letter of the correct option inside <answer></answer> tags."
)

# (name, symbol, family)
_ELEMENTS = [
    ("hydrogen", "H", "nonmetal"), ("helium", "He", "noble gas"), ("lithium", "Li", "alkali metal"),
    ("carbon", "C", "nonmetal"), ("nitrogen", "N", "nonmetal"), ("oxygen", "O", "nonmetal"),
    ("fluorine", "F", "halogen"), ("neon", "Ne", "noble gas"), ("sodium", "Na", "alkali metal"),
    ("magnesium", "Mg", "alkaline earth metal"), ("aluminium", "Al", "metal"), ("silicon", "Si", "metalloid"),
    ("phosphorus", "P", "nonmetal"), ("sulfur", "S", "nonmetal"), ("chlorine", "Cl", "halogen"),
    ("argon", "Ar", "noble gas"), ("potassium", "K", "alkali metal"), ("calcium", "Ca", "alkaline earth metal"),
    ("iron", "Fe", "transition metal"), ("copper", "Cu", "transition metal"), ("zinc", "Zn", "transition metal"),
    ("bromine", "Br", "halogen"), ("krypton", "Kr", "noble gas"), ("silver", "Ag", "transition metal"),
    ("tin", "Sn", "metal"), ("iodine", "I", "halogen"), ("xenon", "Xe", "noble gas"),
    ("gold", "Au", "transition metal"), ("mercury", "Hg", "transition metal"), ("lead", "Pb", "metal"),
]
_LETTERS = "ABCD"


def _science_question(rng: random.Random) -> tuple[str, list[str], int, str]:
    """(question, four options, index of the correct one, one-sentence reason)."""
    kind = rng.choice(["symbol", "name", "family"])
    if kind == "family":
        family = rng.choice(["noble gas", "halogen", "alkali metal"])
        right = rng.choice([e for e in _ELEMENTS if e[2] == family])
        wrong = rng.sample([e for e in _ELEMENTS if e[2] != family], 3)
        question = f"Which of these elements is {'an' if family[0] in 'aeiou' else 'a'} {family}?"
        article = "an" if family[0] in "aeiou" else "a"
        options = [e[0] for e in [right, *wrong]]
        reason = f"{right[0].capitalize()} is {article} {family}; the others are not."
    else:
        right, *wrong = rng.sample(_ELEMENTS, 4)
        if kind == "symbol":
            question = f"What is the chemical symbol of {right[0]}?"
            options = [e[1] for e in [right, *wrong]]
        else:
            question = f"Which element has the chemical symbol {right[1]}?"
            options = [e[0] for e in [right, *wrong]]
        reason = f"The chemical symbol of {right[0]} is {right[1]}."
    order = list(range(4))
    rng.shuffle(order)
    return question, [options[i] for i in order], order.index(0), reason


def _science_record(rng: random.Random, i: int) -> dict:
    stem, options, correct, reason = _science_question(rng)
    letter = _LETTERS[correct]
    user = stem + "\n" + "\n".join(f"{_LETTERS[j]}. {o}" for j, o in enumerate(options))
    # The tag on the reason's line: SmolLM2-135M given "... So the answer is D.\n<answer>D</answer>" as its
    # demonstration stops after the sentence (teacher 0 / 16 on val); with the tag inline it copies it (7 / 16; the
    # student without it: 0 / 16; experiments/teacher_view.py). The question as shown (stem and options) decides the
    # split: a stem can recur across splits with other options, so the element facts are shared; the skill
    # measured is the answer format.
    return _record("embedded_science", i, SCIENCE_SYSTEM, user, f"{reason} <answer>{letter}</answer>", letter,
                   {"question": user, "stem": stem, "options": options})


def science_mcq(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """Four-choice chemistry questions (symbols, names, families): one sentence of reasoning, then <answer> tags."""
    return draw_split(_science_record, n, split, seed, "embedded_science")


# --------------------------------------------------------------------------------------------------
# Medical: short-answer clinical questions with a canonical answer, in a vignette.
# --------------------------------------------------------------------------------------------------

MEDICAL_SYSTEM = "You are a medical expert. Answer the clinical question briefly, ending with 'Answer: <answer>'."

# (question, canonical answer, one-sentence explanation)
_MEDICAL_FACTS = [
    ("Which vitamin deficiency causes scurvy?", "vitamin C", "Scurvy results from a lack of vitamin C, needed for collagen."),
    ("Which vitamin deficiency causes rickets?", "vitamin D", "Rickets comes from too little vitamin D, so bones mineralize poorly."),
    ("Which vitamin deficiency causes night blindness?", "vitamin A", "Vitamin A is needed for retinal pigments; its lack causes night blindness."),
    ("Which vitamin deficiency causes beriberi?", "thiamine", "Beriberi is caused by a lack of thiamine (vitamin B1)."),
    ("Which organ produces insulin?", "pancreas", "Insulin is made by the beta cells of the pancreas."),
    ("Which gland produces thyroxine?", "thyroid", "Thyroxine is secreted by the thyroid gland."),
    ("Which gland produces melatonin?", "pineal gland", "Melatonin is secreted by the pineal gland."),
    ("Which drug reverses an opioid overdose?", "naloxone", "Naloxone is an opioid receptor antagonist."),
    ("Which drug is the antidote to a paracetamol overdose?", "acetylcysteine", "Acetylcysteine restores glutathione and protects the liver."),
    ("Which drug reverses the effect of heparin?", "protamine", "Protamine binds heparin and neutralizes it."),
    ("Which vitamin reverses the effect of warfarin?", "vitamin K", "Warfarin blocks vitamin K recycling, so vitamin K reverses it."),
    ("Which drug reverses a benzodiazepine overdose?", "flumazenil", "Flumazenil is a benzodiazepine receptor antagonist."),
    ("Which parasite causes malaria?", "Plasmodium", "Malaria is caused by Plasmodium parasites carried by mosquitoes."),
    ("Which mineral deficiency is the most common cause of anemia?", "iron", "Iron deficiency is the most common cause of anemia."),
    ("Which electrolyte is too high in hyperkalemia?", "potassium", "Hyperkalemia means a high blood potassium level."),
    ("Which electrolyte is too low in hyponatremia?", "sodium", "Hyponatremia means a low blood sodium level."),
    ("Which organ is inflamed in hepatitis?", "liver", "Hepatitis is inflammation of the liver."),
    ("Which organ is inflamed in nephritis?", "kidney", "Nephritis is inflammation of the kidney."),
    ("Which organ is inflamed in pancreatitis?", "pancreas", "Pancreatitis is inflammation of the pancreas."),
    ("Which blood cells carry oxygen?", "red blood cells", "Red blood cells carry oxygen bound to hemoglobin."),
    ("Which hormone is lacking in type 1 diabetes?", "insulin", "Type 1 diabetes destroys the cells that make insulin."),
    ("Which bacterium causes tuberculosis?", "Mycobacterium tuberculosis", "Tuberculosis is caused by Mycobacterium tuberculosis."),
    ("Which antibiotic was the first penicillin discovered?", "penicillin G", "Benzylpenicillin, penicillin G, was the first."),
    ("Which bone is the longest in the human body?", "femur", "The femur, the thigh bone, is the longest bone."),
]
_PATIENTS = ["man", "woman", "boy", "girl"]


def _medical_record(rng: random.Random, i: int) -> dict:
    question, answer, explanation = rng.choice(_MEDICAL_FACTS)
    age = rng.randint(8, 15) if (who := rng.choice(_PATIENTS)) in ("boy", "girl") else rng.randint(20, 80)
    user = f"A {age}-year-old {who} is seen in clinic. {question}"
    # the vignette decides the split; its clinical question (one of the facts above) recurs across splits
    return _record("embedded_medical", i, MEDICAL_SYSTEM, user, f"{explanation}\nAnswer: {answer}", answer,
                   {"question": user, "fact": question})


def medical_qa(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """Short-answer clinical questions (deficiencies, antidotes, organs) inside a seeded patient vignette."""
    return draw_split(_medical_record, n, split, seed, "embedded_medical")


# --------------------------------------------------------------------------------------------------
# Knowledge: a fictional world (so no model knows it beforehand). Each town has four facts, all stated in its
# article; questions ask one or two of them directly (the training wording), in other words (paraphrased), or
# indirectly (two hops: the town named only through its mayor or its founding year).
# --------------------------------------------------------------------------------------------------

KNOWLEDGE_SYSTEM = "Answer the question about the towns of Veloria in one short sentence."

KNOWLEDGE_FACTS = ("river", "export", "founded", "mayor")  # the facts of every town, in the order questions ask them
KNOWLEDGE_KINDS = ("direct", "paraphrased", "indirect")
N_TOWNS = 16
VAL_PER_KIND = 8  # of each kind's held-out questions, this many go to val (one each from as many towns), the rest to test

_SYLLABLES = ["var", "nel", "tor", "ka", "mi", "dros", "el", "bru", "sen", "ta", "lor", "quin", "ha", "zed", "ru"]
_RIVERS = ["Sela", "Orna", "Brisk", "Tavel", "Muna", "Kesh", "Dorrow", "Ilvi", "Presk", "Anwe"]
_EXPORTS = ["copper", "wool", "salt", "amber", "timber", "glass", "honey", "cheese", "linen", "pottery"]
# first and last names are drawn without replacement: no two mayors share either, so a half-name never names one
_FIRST = ["Ilse", "Marten", "Odile", "Tamsin", "Bjorn", "Nadia", "Osric", "Petra", "Lukas", "Vera", "Agnes", "Emeric",
          "Freya", "Hugo", "Greta", "Anselm", "Liesel", "Corin"]
_LAST = ["Brandt", "Okafor", "Lindqvist", "Moreau", "Halloran", "Szabo", "Castell", "Ivanova", "Novak", "Ferreira",
         "Achterberg", "Whitlow", "Dumont", "Kowalczyk", "Marsh", "Quist", "Reyes", "Tanaka"]
_YEARS = range(1400, 1900)


def _article(town: dict) -> str:
    """The encyclopedia article of a town: every one of its facts, in a few sentences (CPT's corpus, RAG's source)."""
    return (f"{town['town']} is a town in the fictional country of Veloria. It was founded in {town['founded']} on the "
            f"banks of the river {town['river']}. The town is known for its {town['export']}, which it trades across "
            f"Veloria. Its current mayor is {town['mayor']}.")


def _check_distinct_values(towns: list[dict]) -> None:
    """Raise when one value of the world (a town name or a fact) occurs as whole words inside another: then a
    response naming one would also name the other, and containment could not tell a right answer from a wrong one."""
    values = sorted({normalize_text(t[k]) for t in towns for k in ("town", *KNOWLEDGE_FACTS)})
    for a in values:
        for b in values:
            if a != b and f" {a} " in f" {b} ":
                raise ValueError(f"embedded_knowledge world: value {a!r} occurs inside value {b!r}")


def knowledge_world(seed: int = 0, n_towns: int = N_TOWNS) -> list[dict]:
    """The fictional towns of Veloria, deterministic given the seed: per town a name, the four facts of
    ``KNOWLEDGE_FACTS`` (river and export may recur across towns; founding years and mayors are unique, so a question
    that names a town only by its mayor or its year has one answer) and an ``article`` stating all four."""
    if not 1 <= n_towns <= min(len(_FIRST), len(_LAST)):
        raise ValueError(f"n_towns must be between 1 and {min(len(_FIRST), len(_LAST))}, got {n_towns}")
    rng = random.Random(f"embedded_knowledge-world:{seed}")
    names: list[str] = []
    while len(names) < n_towns:
        name = "".join(rng.sample(_SYLLABLES, 2)).capitalize()
        if name not in names:
            names.append(name)
    firsts, lasts, years = rng.sample(_FIRST, n_towns), rng.sample(_LAST, n_towns), rng.sample(_YEARS, n_towns)
    towns = []
    for name, first, last, year in zip(names, firsts, lasts, years):
        town = {"town": name, "river": rng.choice(_RIVERS), "export": rng.choice(_EXPORTS), "founded": str(year),
                "mayor": f"{first} {last}"}
        towns.append({**town, "article": _article(town)})
    _check_distinct_values(towns)
    return towns


# Per wording and fact: the clause that asks it first (naming the subject) and the clause that asks it second
# (about "it"). A two-fact question is the first clause, ", and ", the second clause, "?".
_ASK = {
    "direct": {  # the training wording
        "river": ("Which river flows through {subject}", "which river flows through it"),
        "export": ("What is {subject} known for producing", "what is it known for producing"),
        "founded": ("In which year was {subject} founded", "in which year was it founded"),
        "mayor": ("Who is the mayor of {subject}", "who is its mayor"),
    },
    "paraphrased": {
        "river": ("On which river does {subject} lie", "on which river does it lie"),
        "export": ("Which product does {subject} trade across Veloria", "which product does it trade"),
        "founded": ("When was {subject} established", "when was it established"),
        "mayor": ("Who currently leads {subject} as mayor", "who leads it as mayor"),
    },
}
_ASK["indirect"] = _ASK["direct"]  # the training wording, with the town replaced by its description
_PIVOTS = {"mayor": "the town whose mayor is {mayor}", "founded": "the town founded in {founded}"}
_SAYS = {"river": "lies on the river {river}", "export": "is known for its {export}",
         "founded": "was founded in {founded}", "mayor": "has {mayor} as its mayor"}


def knowledge_question(town: dict, facts: tuple[str, ...], kind: str, pivot: str | None = None) -> str:
    """The question asking ``facts`` (one or two) of ``town`` in the wording of ``kind``; an ``indirect`` question
    names the town only through its ``pivot`` fact (``mayor`` or ``founded``), which it does not ask."""
    if (kind == "indirect") != (pivot is not None) or pivot in facts:
        raise ValueError(f"{kind} question on {facts}: pivot {pivot!r} does not fit (indirect questions need one "
                         "pivot outside the facts asked, the others none)")
    subject = town["town"] if pivot is None else _PIVOTS[pivot].format(**town)
    first, *rest = facts
    return ", and ".join([_ASK[kind][first][0].format(subject=subject)] + [_ASK[kind][f][1] for f in rest]) + "?"


def knowledge_answer(town: dict, facts: tuple[str, ...], pivot: str | None = None) -> str:
    """The one-sentence answer: the town (with its pivot fact for an indirect question) and the facts asked."""
    subject = town["town"] if pivot is None else f"{town['town']}, {_PIVOTS[pivot].format(**town)},"
    return f"{subject} {' and '.join(_SAYS[f].format(**town) for f in facts)}."


def wrong_values(world: list[dict], town: dict, facts: tuple[str, ...]) -> list[str]:
    """The values the world gives other towns for the facts asked, without the town's own: any of them in a
    response contradicts the answer. Per fact in the order asked, each sorted."""
    return [v for f in facts for v in sorted({t[f] for t in world} - {town[f]})]


_PAIRS = list(itertools.combinations(KNOWLEDGE_FACTS, 2))  # the six two-fact questions of a town
_MATCHINGS = [(p, tuple(f for f in KNOWLEDGE_FACTS if f not in p)) for p in _PAIRS if p[0] == KNOWLEDGE_FACTS[0]]
# the three ways to cover the four facts with two pairs: ((river, export), (founded, mayor)), ...


def _town_plan(rng: random.Random) -> dict[str, list[tuple[tuple[str, ...], str | None]]]:
    """The ``(facts, pivot)`` of one town's questions: ``train`` (every fact alone and one matching of two pairs,
    so each fact is taught once alone and once in a pair) and four held-out questions per kind: ``direct`` the four
    pairs not trained, ``paraphrased`` two single facts and two pairs, ``indirect`` two single facts and two pairs
    through a pivot (mayor or founding year)."""
    trained = rng.choice(_MATCHINGS)
    singles = [(f,) for f in KNOWLEDGE_FACTS]
    via_one = [((f,), p) for p in _PIVOTS for f in KNOWLEDGE_FACTS if f != p]
    via_two = [(pair, p) for p in _PIVOTS for pair in _PAIRS if p not in pair]
    plan = {"train": [(s, None) for s in singles] + [(p, None) for p in trained],
            "direct": [(p, None) for p in _PAIRS if p not in trained],
            "paraphrased": [(s, None) for s in rng.sample(singles, 2)] + [(p, None) for p in rng.sample(_PAIRS, 2)],
            "indirect": rng.sample(via_one, 2) + rng.sample(via_two, 2)}
    for kind in KNOWLEDGE_KINDS:
        rng.shuffle(plan[kind])
    return plan


def _knowledge_record(world: list[dict], town: dict, facts: tuple[str, ...], kind: str, pivot: str | None) -> dict:
    question = knowledge_question(town, facts, kind, pivot)
    answer = knowledge_answer(town, facts, pivot)
    return {
        "id": f"embedded_knowledge-{town['town'].lower()}-{'-'.join(facts)}-{kind}" + (f"-via-{pivot}" if pivot else ""),
        "task": "embedded_knowledge",
        "prompt": [{"role": "system", "content": KNOWLEDGE_SYSTEM}, {"role": "user", "content": question}],
        "demonstration": answer,
        "reference": answer,
        "meta": {"question": question, "article": town["article"], "kind": kind, "town": town["town"],
                 "facts": list(facts), "pivot": pivot, "key_facts": [town[f] for f in facts],
                 "wrong_values": wrong_values(world, town, facts)},
    }


def knowledge_splits(seed: int = 0, n_towns: int = N_TOWNS, val_per_kind: int = VAL_PER_KIND) -> dict[str, list[dict]]:
    """Every split of the world of ``seed`` (see :func:`knowledge_qa`), in one pass so they stay disjoint."""
    world = knowledge_world(seed, n_towns)
    rng = random.Random(f"embedded_knowledge-questions:{seed}")
    plans = [_town_plan(rng) for _ in world]
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for town, plan in zip(world, plans):
        splits["train"] += [_knowledge_record(world, town, facts, "direct", None) for facts, _ in plan["train"]]
    for kind in KNOWLEDGE_KINDS:
        val_towns = set(rng.sample(range(len(world)), min(val_per_kind, len(world))))
        for i, (town, plan) in enumerate(zip(world, plans)):
            for j, (facts, pivot) in enumerate(plan[kind]):
                split = "val" if i in val_towns and j == 0 else "test"
                splits[split].append(_knowledge_record(world, town, facts, kind, pivot))
    return splits


def knowledge_qa(split: str, seed: int = 0) -> list[dict]:
    """Questions about the fictional world of :func:`knowledge_world` (16 towns), one or two facts each.

    ``train`` (96 records, all ``meta.kind == "direct"``): per town each fact alone and two two-fact questions that
    together cover the four facts, in the training wording; SFT's and SDFT's training data.
    ``test`` (168: 56 per kind) and ``val`` (24: 8 per kind) hold per town four held-out questions of each kind,
    one of a kind going to val for 8 towns: ``direct`` the training wording on the four fact pairs not trained (a
    new combination of known facts), ``paraphrased`` two single facts and two pairs in other words, ``indirect``
    (out of distribution) two single facts and two pairs asked of "the town whose mayor is ..." or "the town
    founded in ...", never naming the town. No val or test question is a training question, and val and test
    share none.

    ``reference`` and ``demonstration`` are the one-sentence answer; ``meta`` holds the town's ``article`` (the
    corpus of CPT and oracle RAG), ``kind``, ``town``, ``facts`` (the facts asked), ``pivot`` (indirect: the fact
    naming the town), ``key_facts`` (their values, which a correct answer must contain) and ``wrong_values`` (the
    other towns' values of those facts: contradictions), what :class:`data_prep.fact_judge.FactJudge` scores with.
    """
    splits = knowledge_splits(seed)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(splits)}")
    return splits[split]
