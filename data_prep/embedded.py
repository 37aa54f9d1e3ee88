"""Embedded mini tasks: procedurally generated, with known answers, in the record schema.

They run offline and are small enough for SmolLM2-135M on a CPU. Every generator is deterministic
given its seed.
"""

from __future__ import annotations

import hashlib
import json
import random

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
# Knowledge: a fictional world (so no model knows it beforehand), one article per town,
# direct questions on its facts and indirect (two-hop) questions that combine two facts.
# --------------------------------------------------------------------------------------------------

KNOWLEDGE_SYSTEM = "Answer the question about the towns of Veloria in one short sentence."

_SYLLABLES = ["var", "nel", "tor", "ka", "mi", "dros", "el", "bru", "sen", "ta", "lor", "quin", "ha", "zed", "ru"]
_RIVERS = ["Sela", "Orna", "Brisk", "Tavel", "Muna", "Kesh", "Dorrow", "Ilvi"]
_EXPORTS = ["copper", "wool", "salt", "amber", "timber", "glass", "honey", "cheese"]
_FIRST = ["Ilse", "Marten", "Odile", "Tamsin", "Bjorn", "Nadia", "Osric", "Petra", "Lukas", "Vera"]
_LAST = ["Brandt", "Okafor", "Lindqvist", "Moreau", "Halloran", "Szabo", "Castell", "Ivanova"]


def knowledge_world(seed: int = 0, n_towns: int = 12) -> list[dict]:
    """The fictional towns of Veloria with their facts and a short encyclopedia article each (deterministic)."""
    rng = random.Random(f"embedded_knowledge-world:{seed}")
    names: list[str] = []
    while len(names) < n_towns:
        name = "".join(rng.sample(_SYLLABLES, 2)).capitalize()
        if name not in names:
            names.append(name)
    mayors = rng.sample([f"{f} {l}" for f in _FIRST for l in _LAST], n_towns)
    towns = []
    for name, mayor in zip(names, mayors):
        town = {"town": name, "river": rng.choice(_RIVERS), "export": rng.choice(_EXPORTS),
                "founded": str(rng.randint(1400, 1900)), "mayor": mayor}
        town["article"] = (
            f"{name} is a town in the fictional country of Veloria. It was founded in {town['founded']} on the banks "
            f"of the river {town['river']}. The town is known for its {town['export']}, which it trades across "
            f"Veloria. Its current mayor is {mayor}."
        )
        towns.append(town)
    return towns


_DIRECT = {  # the wording of training questions
    "river": ("Which river flows through {town}?", "The river {river} flows through {town}."),
    "export": ("What is {town} known for producing?", "{town} is known for its {export}."),
    "founded": ("In which year was {town} founded?", "{town} was founded in {founded}."),
    "mayor": ("Who is the mayor of {town}?", "The mayor of {town} is {mayor}."),
}
_PARAPHRASED = {  # the same facts asked in other words (validation and test)
    "river": ("Name the river on whose banks {town} lies.", "{town} lies on the river {river}."),
    "export": ("Which product does {town} trade across Veloria?", "{town} trades its {export}."),
    "founded": ("How old is {town}? Give the year it was founded.", "{town} was founded in {founded}."),
    "mayor": ("Who currently leads {town} as mayor?", "{mayor} is the mayor of {town}."),
}
_INDIRECT = {  # two-hop questions that name the town only through its mayor (out of distribution)
    "river": ("Which river flows through the town whose mayor is {mayor}?", "{mayor} is mayor of {town}, on the river {river}."),
    "export": ("What does the town governed by {mayor} produce?", "{mayor} governs {town}, known for its {export}."),
    "founded": ("When was the town led by {mayor} founded?", "{mayor} leads {town}, founded in {founded}."),
}
_WORDINGS = {"direct": _DIRECT, "paraphrased": _PARAPHRASED, "indirect": _INDIRECT}


def _knowledge_record(town: dict, fact: str, kind: str) -> dict:
    question, answer_sentence = _WORDINGS[kind][fact]
    return {
        "id": f"embedded_knowledge-{town['town'].lower()}-{fact}-{kind}",
        "task": "embedded_knowledge",
        "prompt": [{"role": "system", "content": KNOWLEDGE_SYSTEM},
                   {"role": "user", "content": question.format(**town)}],
        "demonstration": answer_sentence.format(**town),
        "reference": town[fact],
        "meta": {"article": town["article"], "kind": kind, "fact": fact, "town": town["town"]},
    }


def knowledge_qa(split: str, seed: int = 0) -> list[dict]:
    """Questions about the fictional world of :func:`knowledge_world`.

    ``train``: every fact of every town, asked in the training wording (``meta.kind == "direct"``).
    ``val``: the mayor and founding year asked in other words (``"paraphrased"``).
    ``test``: river and export in other words, plus out-of-distribution ``"indirect"`` questions that name the
    town only through its mayor, so answering needs two facts at once (river, export, founding year).
    The articles (``meta.article``) are the corpus for CPT and oracle RAG.
    """
    plan = {
        "train": [(f, "direct") for f in ("river", "export", "founded", "mayor")],
        "val": [("mayor", "paraphrased"), ("founded", "paraphrased")],
        "test": [("river", "paraphrased"), ("export", "paraphrased"),
                 ("river", "indirect"), ("export", "indirect"), ("founded", "indirect")],
    }
    if split not in plan:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(plan)}")
    return [_knowledge_record(t, fact, kind) for t in knowledge_world(seed) for fact, kind in plan[split]]
