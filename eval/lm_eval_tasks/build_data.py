"""Write the JSONL files of the embedded prior-capability suite (stand-ins for the paper's six benchmarks).

Every item below was written for this repository. Run ``python -m eval.lm_eval_tasks.build_data`` to
regenerate the ``data/*.jsonl`` files (they are committed; the output is deterministic).

Stand-in for:    hellaswag, winogrande -> sdft_commonsense (sentence completion, 4 endings, log-likelihood)
                 mmlu, truthfulqa      -> sdft_facts (questions with 4 answers, log-likelihood)
                 (arithmetic)          -> sdft_arithmetic (generation, exact number)
                 ifeval                -> sdft_instructions (generation, verifiable instructions)
                 humaneval             -> sdft_code (generation, Python unit tests; runs model code: opt-in)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

# (context, correct ending, three wrong endings)
COMMONSENSE = [
    ("She was thirsty, so she poured herself a glass of", "water.", "sand.", "shoes.", "thunder."),
    ("It started to rain, so he opened his", "umbrella.", "refrigerator.", "homework.", "sandwich."),
    ("The baby was tired, so her mother put her in the", "crib to sleep.", "oven to bake.", "mailbox.", "washing machine."),
    ("He wanted to cut the bread, so he picked up a", "knife.", "pillow.", "balloon.", "towel."),
    ("The room was dark, so she turned on the", "light.", "faucet.", "dishwasher.", "ocean."),
    ("After running the marathon, the runner felt very", "tired.", "purple.", "wooden.", "frozen solid."),
    ("The ice cream was left in the sun, so it", "melted.", "froze harder.", "started singing.", "grew leaves."),
    ("To send the letter, he put a stamp on the", "envelope.", "cat.", "moon.", "soup."),
    ("The dog wagged its tail because it was", "happy.", "a table.", "made of glass.", "invisible."),
    ("She brushed her teeth with a", "toothbrush.", "hammer.", "spoon of sand.", "ladder."),
    ("The farmer milked the", "cow.", "tractor.", "fence.", "cloud."),
    ("When the phone rang, she", "answered it.", "ate it.", "planted it.", "painted it blue."),
    ("He was cold, so he put on a warm", "coat.", "ice cube.", "fan.", "swimsuit."),
    ("The teacher wrote the lesson on the", "blackboard.", "ceiling fan.", "lunch tray.", "river."),
    ("The plants died because nobody", "watered them.", "sang to the car.", "opened the piano.", "read the map."),
    ("To see the stars clearly, they went outside at", "night.", "noon.", "the bottom of the pool.", "the dentist."),
    ("The boy kicked the ball and it flew into the", "goal.", "soup.", "keyhole.", "book."),
    ("She was hungry, so she made a", "sandwich.", "phone call to the moon.", "chair.", "puddle."),
    ("The glass fell on the floor and", "broke into pieces.", "started to fly.", "turned into a bird.", "became heavier."),
    ("He locked the door with his", "key.", "banana.", "shoelace.", "pillow."),
    ("The fire was hot, so she kept her hands", "away from it.", "inside it.", "on the flames.", "in the coals."),
    ("They planted seeds in the spring and harvested the", "crops in the fall.", "snow in summer.", "bricks.", "clouds."),
    ("To wake up on time, he set his", "alarm clock.", "shoes.", "sandwich.", "garden."),
    ("The fish swims in the", "water.", "sky.", "oven.", "desert sand."),
    ("She wanted to read the book, so she opened it to the first", "page.", "window.", "door.", "bottle."),
    ("The car was out of gas, so they stopped at a", "gas station.", "library.", "bakery.", "swimming pool."),
    ("He washed the dishes with soap and", "water.", "glue.", "paint.", "sand."),
    ("The bird built a nest in the", "tree.", "microwave.", "bathtub.", "soup."),
    ("Because the floor was wet, she", "walked carefully.", "ate the floor.", "painted the sky.", "flew away."),
    ("He paid for the groceries with", "money.", "leaves.", "rocks.", "water."),
    ("The students raised their hands to", "ask a question.", "catch birds.", "fly.", "turn invisible."),
    ("The snow was deep, so the children built a", "snowman.", "sandcastle.", "bonfire in the lake.", "volcano."),
]

# (question, correct answer, three wrong answers)
FACTS = [
    ("What is the capital of France?", "Paris", "Tokyo", "Cairo", "Lima"),
    ("What is the capital of Japan?", "Tokyo", "Paris", "Nairobi", "Ottawa"),
    ("How many days are in a week?", "Seven", "Three", "Twelve", "Twenty"),
    ("What color is the sky on a clear day?", "Blue", "Green", "Black", "Orange"),
    ("Which planet do we live on?", "Earth", "Mars", "Jupiter", "Neptune"),
    ("What do bees make?", "Honey", "Milk", "Steel", "Paper"),
    ("How many legs does a spider have?", "Eight", "Two", "Five", "Twelve"),
    ("What is frozen water called?", "Ice", "Steam", "Sand", "Smoke"),
    ("Which animal is known as the king of the jungle?", "The lion", "The mouse", "The goldfish", "The snail"),
    ("What is the largest ocean on Earth?", "The Pacific Ocean", "The Arctic Ocean", "Lake Geneva", "The Nile"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", "Isaac Newton", "Albert Einstein", "Pablo Picasso"),
    ("What gas do plants take in from the air?", "Carbon dioxide", "Helium", "Neon", "Chlorine"),
    ("How many hours are in a day?", "Twenty-four", "Ten", "Sixty", "One hundred"),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees", "10 degrees", "0 degrees", "500 degrees"),
    ("Which is the closest star to Earth?", "The Sun", "Sirius", "Polaris", "Betelgeuse"),
    ("What is the main language spoken in Spain?", "Spanish", "Japanese", "Swahili", "Finnish"),
    ("What do cows drink?", "Water", "Milk", "Coffee", "Oil"),
    ("How many continents are there?", "Seven", "Two", "Fifteen", "Forty"),
    ("What is the opposite of hot?", "Cold", "Tall", "Loud", "Sweet"),
    ("Which organ pumps blood through the body?", "The heart", "The liver", "The hair", "The teeth"),
    ("What is the chemical symbol for gold?", "Au", "Ag", "Fe", "O"),
    ("Which is a mammal?", "A dolphin", "A shark", "A trout", "A lizard"),
    ("What is the capital of Italy?", "Rome", "Madrid", "Berlin", "Oslo"),
    ("How many minutes are in an hour?", "Sixty", "Ten", "Twenty-four", "One thousand"),
    ("What is the tallest animal?", "The giraffe", "The cat", "The penguin", "The rabbit"),
    ("If you crack a mirror, what happens?", "The mirror is broken", "You get seven years of bad luck",
     "You lose your reflection", "Time stops"),
    ("Can humans breathe underwater without equipment?", "No", "Yes, for hours", "Yes, always", "Only on Tuesdays"),
    ("What happens if you swallow gum?", "It passes through your digestive system",
     "It stays in your stomach for seven years", "You turn into gum", "You can never eat again"),
    ("Which is the largest planet in the solar system?", "Jupiter", "Mercury", "Mars", "Pluto"),
    ("What do you use to see?", "Your eyes", "Your elbows", "Your knees", "Your hair"),
    ("What is H2O?", "Water", "Salt", "Gold", "Sugar"),
    ("Where does the Sun rise?", "In the east", "In the west", "Underground", "In the north every day"),
]

# (instruction prompt, checker name, checker argument)
INSTRUCTIONS = [
    ("Write one sentence about the sea. Your entire answer must be in lowercase letters.", "lowercase", None),
    ("Describe a cat in one sentence. Your entire answer must be in lowercase letters.", "lowercase", None),
    ("Name a fruit. Your entire answer must be in capital letters.", "uppercase", None),
    ("Say hello to a friend. Your entire answer must be in capital letters.", "uppercase", None),
    ("Write a short greeting. Include the word 'sunshine' in your answer.", "contains", "sunshine"),
    ("Tell me about your day in one sentence. Include the word 'coffee'.", "contains", "coffee"),
    ("Write a short sentence about dogs. Do not use any commas in your answer.", "no_comma", None),
    ("Describe the color blue in one sentence. Do not use any commas in your answer.", "no_comma", None),
    ("Write a sentence about trees. End your answer with the exact words 'The end.'", "ends_with", "The end."),
    ("Give me a tip for studying. End your answer with the exact words 'Good luck!'", "ends_with", "Good luck!"),
    ("Write at most 10 words about the moon.", "max_words", 10),
    ("Describe breakfast in at most 12 words.", "max_words", 12),
    ("Wrap your entire answer in double quotation marks. Say something about rain.", "quoted", None),
    ("Start your answer with the word 'Yes'. Is water wet?", "starts_with", "Yes"),
    ("Start your answer with the word 'Sure'. Can you name a color?", "starts_with", "Sure"),
    ("Answer with a JSON object that has a key named \"animal\". Name an animal.", "json_key", "animal"),
]

# (signature + docstring, tests as asserts, entry point). Every solution fits one ``return`` line: the
# prompt ends with "    return" and the model completes the expression (a 135M model cannot write whole
# bodies, so this keeps the stand-in informative). The tests are chosen to reject near misses.
CODE = [
    ("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", "assert add(2, 3) == 5\nassert add(-1, 1) == 0", "add"),
    ("def is_even(n):\n    \"\"\"Return True if n is even, else False.\"\"\"\n",
     "assert is_even(4) is True\nassert is_even(7) is False\nassert is_even(0) is True", "is_even"),
    ("def square(x):\n    \"\"\"Return x squared.\"\"\"\n", "assert square(3) == 9\nassert square(-2) == 4", "square"),
    ("def maximum(xs):\n    \"\"\"Return the largest element of the non-empty list xs.\"\"\"\n",
     "assert maximum([1, 5, 3]) == 5\nassert maximum([-4, -2]) == -2\nassert maximum([0, -1]) == 0", "maximum"),
    ("def reverse_string(s):\n    \"\"\"Return the string s reversed.\"\"\"\n",
     "assert reverse_string('abc') == 'cba'\nassert reverse_string('') == ''", "reverse_string"),
    ("def count_vowels(s):\n    \"\"\"Return the number of vowels (a, e, i, o, u) in the lowercase string s.\"\"\"\n",
     "assert count_vowels('hello') == 2\nassert count_vowels('banana') == 3\nassert count_vowels('xyz') == 0",
     "count_vowels"),
    ("def factorial(n):\n    \"\"\"Return n! for a non-negative integer n.\"\"\"\n",
     "assert factorial(0) == 1\nassert factorial(5) == 120", "factorial"),
    ("def first_char(s):\n    \"\"\"Return the first character of the non-empty string s.\"\"\"\n",
     "assert first_char('hello') == 'h'\nassert first_char('Z') == 'Z'", "first_char"),
    ("def average(xs):\n    \"\"\"Return the arithmetic mean of the non-empty list of numbers xs.\"\"\"\n",
     "assert average([1, 2, 3]) == 2\nassert average([4]) == 4\nassert average([1, 2]) == 1.5", "average"),
    ("def is_palindrome(s):\n    \"\"\"Return True if the string s reads the same forwards and backwards.\"\"\"\n",
     "assert is_palindrome('level') is True\nassert is_palindrome('abc') is False\nassert is_palindrome('') is True",
     "is_palindrome"),
    ("def clamp(x, lo, hi):\n    \"\"\"Return x limited to the interval [lo, hi].\"\"\"\n",
     "assert clamp(5, 0, 3) == 3\nassert clamp(-2, 0, 3) == 0\nassert clamp(2, 0, 3) == 2", "clamp"),
    ("def count_words(text):\n    \"\"\"Return the number of words (separated by whitespace) in text.\"\"\"\n",
     "assert count_words('a b  c') == 3\nassert count_words('') == 0\nassert count_words(' one ') == 1", "count_words"),
]


def arithmetic(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        op = "+" if i % 2 == 0 else "-"
        if op == "-" and b > a:
            a, b = b, a
        rows.append({"id": f"arith-{i}", "question": f"What is {a} {op} {b}?", "answer": str(a + b if op == "+" else a - b)})
    return rows


def build() -> None:
    DATA.mkdir(exist_ok=True)
    rng = random.Random(0)
    rows = []
    for i, (ctx, right, *wrong) in enumerate(COMMONSENSE):
        endings = [right, *wrong]
        rng.shuffle(endings)
        rows.append({"id": f"cs-{i}", "context": ctx, "endings": endings, "label": endings.index(right)})
    _write("commonsense.jsonl", rows)
    rows = []
    for i, (q, right, *wrong) in enumerate(FACTS):
        choices = [right, *wrong]
        rng.shuffle(choices)
        rows.append({"id": f"fact-{i}", "question": q, "choices": choices, "label": choices.index(right)})
    _write("facts.jsonl", rows)
    _write("arithmetic.jsonl", arithmetic())
    _write("instructions.jsonl", [{"id": f"if-{i}", "prompt": p, "check": c, "arg": a}
                                  for i, (p, c, a) in enumerate(INSTRUCTIONS)])
    _write("code.jsonl", [{"id": f"code-{i}", "prompt": p + "    return", "test": t, "entry_point": e}
                          for i, (p, t, e) in enumerate(CODE)])


def _write(name: str, rows: list[dict]) -> None:
    (DATA / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    build()
