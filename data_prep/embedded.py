"""Embedded mini tasks: procedurally generated, with known answers, in the record schema.

They run offline and are small enough for SmolLM2-135M on a CPU. Every generator is deterministic
given its seed.
"""

from __future__ import annotations

import json
import random

_CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Rome", "Quito", "Seoul", "Accra", "Hanoi", "Dakar"]
_UNITS = ["celsius", "fahrenheit"]

TOOL_SYSTEM = (
    "You can call one tool. Answer with exactly two lines:\n"
    "Action: <tool name>\nAction Input: <JSON arguments>"
)


def _tool_record(i: int, rng: random.Random) -> dict:
    city, unit = rng.choice(_CITIES), rng.choice(_UNITS)
    call = {"name": "get_weather", "arguments": {"city": city, "unit": unit}}
    question = f"What is the weather in {city} in {unit}?"
    user = (
        "Tool: get_weather(city: string, unit: 'celsius' | 'fahrenheit') -- current weather of a city.\n"
        f"Question: {question}"
    )
    demo = f"Action: get_weather\nAction Input: {json.dumps(call['arguments'])}"
    return {
        "id": f"embedded_tool-{i:04d}",
        "task": "embedded_tool",
        "prompt": [{"role": "system", "content": TOOL_SYSTEM}, {"role": "user", "content": user}],
        "demonstration": demo,
        "reference": [call],
        "meta": {"question": question},
    }


def tool_calls(n: int, seed: int = 0) -> list[dict]:
    """A tool-call task in the ReAct answer format of ToolAlpaca (Action / Action Input)."""
    rng = random.Random(f"embedded_tool:{seed}")
    return [_tool_record(i, rng) for i in range(n)]
