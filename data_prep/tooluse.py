"""Tool Use: ToolAlpaca (Tang et al., 2023), with its original train / test split.

* train: the training release (``train_data.json``: one object per API with ``Instances``, each a simulated
  episode ``{"input", "output", "Final Thought", "intermediate_steps": [[[action, action_input, log], observation],
  ...]}``). The demonstration is the golden episode written out as a ReAct trace; the reference is its calls.
  A seeded 5% of the training episodes is held out as ``val`` (the release has no validation set).
* test: the simulated evaluation set (``eval_simulated.json``: per API, ``Instructions`` and ``Golden_Answers``,
  a list of ``{"Action", "Action_Input"}`` calls per instruction).

The prompt is ToolAlpaca's ReAct format: the tool's name, description and natural-language documentation, the
Thought / Action / Action Input answer format, then the question.

Golden calls whose ``Action_Input`` is not JSON (the evaluation set writes placeholders such as
``${animeId from searchAnime}`` for values that only a tool's response would give) cannot be compared by the
scorer (likewise a placeholder inside a JSON string, ``"${string}"``); those questions are left out, counted and reported (``ToolUseReport``), never dropped silently.

A question is the pair (API name, instruction with whitespace normalized): repeated questions (a repeated API
entry, or the same instruction in two episodes of one API) are removed before the train / val split
(``sources.dedupe``), so none is in two splits, and the test set has each question once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.schema import RecordError, SkipReport, SplitReport
from data_prep.sources import (DataSourceError, convert_all, dedupe, download, read_json_records, require_field,
                               seeded_split, stable_id, whitespace_key)

log = logging.getLogger("data_prep")

TASK = "tooluse"
RELEASE_URL = "https://raw.githubusercontent.com/tangqiaoyu/ToolAlpaca/main/data/{name}"
TRAIN_FILE = "train_data.json"
TEST_FILE = "eval_simulated.json"
MIRROR_FILES = f"toolalpaca/{TRAIN_FILE} and toolalpaca/{TEST_FILE}"
VAL_FRACTION = 0.05

PROMPT_TEMPLATE = """Answer the user's question by calling the tools described below.

Available tools:
Name: {name}
Description: {description}
Documentation:
{documentation}

Reply in this format:
Thought: your reasoning about what to do next
Action: the tool to call, exactly one of the function names in the documentation
Action Input: the arguments of the call as a JSON object, using only realistic values given by the user

Begin!
Question: {question}"""


def build_prompt(name: str, description: str, documentation: str, question: str) -> list[dict]:
    text = PROMPT_TEMPLATE.format(name=name.strip(), description=description.strip(),
                                  documentation=documentation.strip(), question=question.strip())
    return [{"role": "user", "content": text}]


@dataclass
class ToolUseReport:
    """Counts of one ToolAlpaca file: what became records, what was left out and why."""

    source: str
    apis: int = 0
    records: int = 0
    unscorable: list[str] = field(default_factory=list)  # golden calls with non-JSON arguments
    no_steps: int = 0  # training episodes without any tool call
    invalid: SkipReport | None = None
    split_report: SplitReport = field(default_factory=SplitReport)  # the same counts in the shared form

    def __str__(self) -> str:
        s = (f"{self.source}: {self.apis} APIs -> {self.records} records; left out {len(self.unscorable)} with "
             f"non-JSON golden arguments, {self.no_steps} episodes without a tool call")
        if self.invalid is not None and self.invalid.skipped:
            s += f"; skipped {len(self.invalid.skipped)} malformed"
        duplicates = self.split_report.duplicate_rows + self.split_report.duplicate_questions
        if duplicates:
            s += f"; removed {duplicates} duplicates"
        return s


def _api_text(api: dict, source: str, where: str) -> tuple[str, str, str]:
    name = require_field(api, "Name", source, where)
    description = require_field(api, "Description", source, where, nonempty=False)
    doc = api.get("NLDocumentation") or api.get("Functions")
    if not isinstance(doc, str) or not doc.strip():
        raise RecordError(source, where, "NLDocumentation", "missing or empty (and no 'Functions' fallback)")
    return name, description, doc


def _parse_call(action, action_input, source: str, where: str, fld: str) -> dict | None:
    """``{"name", "arguments"}``, or None when the arguments are not JSON (an unscorable golden call)."""
    if not isinstance(action, str) or not action.strip():
        raise RecordError(source, where, fld, "the action name must be a non-empty string")
    if isinstance(action_input, dict):
        return {"name": action.strip(), "arguments": action_input}
    if not isinstance(action_input, str):
        raise RecordError(source, where, fld, f"the action input must be a JSON string, got {type(action_input).__name__}")
    try:
        args = json.loads(action_input) if action_input.strip() else {}
    except json.JSONDecodeError:
        return None
    if "${" in json.dumps(args, ensure_ascii=False):  # a placeholder inside a JSON string: "${string}"
        return None
    return {"name": action.strip(), "arguments": args}


def _record(record_id: str, api: tuple[str, str, str], question: str, demonstration: str, calls: list[dict],
            path: Path) -> dict:
    """One tool-use record in the schema; ``api`` is (name, description, documentation)."""
    name, description, doc = api
    return {"id": record_id, "task": TASK, "prompt": build_prompt(name, description, doc, question),
            "demonstration": demonstration, "reference": calls,
            "meta": {"api": name, "question": question, "source": Path(path).name}}


def question_key(record: dict) -> tuple[str, str]:
    """What makes two tool-use records the same question: the API and the instruction, whitespace normalized."""
    return record["meta"]["api"], whitespace_key(record["meta"]["question"])


def _convert_file(path: Path, convert, report: "ToolUseReport", skip_invalid: bool,
                  split_report: SplitReport | None) -> tuple[list[dict], "ToolUseReport"]:
    """Every API entry of a ToolAlpaca file through ``convert``, de-duplicated, with the counts in ``report``."""
    if split_report is not None:
        report.split_report = split_report
    records, invalid = convert_all(read_json_records(path), convert, str(path), skip_invalid)
    report.split_report.absorb(invalid)
    records = dedupe(records, invalid.locations, question_key, report.split_report, skip_invalid)
    report.split_report.leave_out("unscorable_golden_calls", len(report.unscorable))
    report.split_report.leave_out("episodes_without_tool_call", report.no_steps)
    report.records, report.invalid = len(records), invalid
    return records, report


def eval_records(path: Path, skip_invalid: bool = False,
                 split_report: SplitReport | None = None) -> tuple[list[dict], ToolUseReport]:
    """Records of ``eval_simulated.json`` (or ``eval_real.json``): one per instruction with JSON golden calls."""
    source = str(path)
    report = ToolUseReport(source)

    def convert(api, where):
        name, description, doc = _api_text(api, source, where)
        instructions = require_field(api, "Instructions", source, where, list)
        answers = require_field(api, "Golden_Answers", source, where, list)
        if len(instructions) != len(answers):
            raise RecordError(source, where, "Golden_Answers",
                              f"{len(answers)} answers for {len(instructions)} instructions")
        report.apis += 1
        out = []
        for k, (question, golden) in enumerate(zip(instructions, answers)):
            loc = f"{where}, Instructions[{k}]"
            if not isinstance(question, str) or not question.strip():
                raise RecordError(source, loc, "Instructions", "must be a non-empty string")
            if isinstance(golden, dict):
                golden = [golden]
            if not isinstance(golden, list) or not golden:
                raise RecordError(source, loc, "Golden_Answers", "must be a non-empty list of calls")
            calls = []
            for j, call in enumerate(golden):
                fld = f"Golden_Answers[{k}][{j}]"
                if not isinstance(call, dict) or "Action" not in call:
                    raise RecordError(source, loc, fld, "a call needs 'Action' and 'Action_Input'")
                calls.append(_parse_call(call["Action"], call.get("Action_Input", "{}"), source, loc, fld))
            if any(c is None for c in calls):
                report.unscorable.append(f"{name}: {question.strip()[:80]}")
                continue
            # the evaluation set has golden calls, no demonstrations
            out.append(_record(stable_id(TASK, name, question), (name, description, doc), question, "", calls, path))
        return out

    return _convert_file(path, convert, report, skip_invalid, split_report)


def _thought_of(log_text: str) -> str:
    """The reasoning part of an agent step's log (the text before its ``Action:`` line)."""
    text = log_text.split("\nAction:", 1)[0] if "\nAction:" in log_text else ""
    text = text.strip()
    if text.lower().startswith("thought:"):
        text = text[len("thought:"):].strip()
    return text


def render_episode(steps: list[tuple[str, str, str, str]], final_thought: str, answer: str) -> str:
    """A ReAct trace: per step Thought / Action / Action Input / Observation, then the final answer."""
    lines = []
    for thought, action, action_input, observation in steps:
        if thought:
            lines.append(f"Thought: {thought}")
        lines += [f"Action: {action}", f"Action Input: {action_input}", f"Observation: {observation.strip()}"]
    lines.append(f"Thought: {final_thought.strip() or 'I now know the final answer.'}")
    lines.append(f"Final Answer: {answer.strip()}")
    return "\n".join(lines)


def train_records(path: Path, skip_invalid: bool = False,
                  split_report: SplitReport | None = None) -> tuple[list[dict], ToolUseReport]:
    """Records of ToolAlpaca's training release: one per simulated episode with at least one tool call."""
    source = str(path)
    report = ToolUseReport(source)

    def convert(api, where):
        if isinstance(api, dict) and api.get("Function_Description") is None and "Instances" not in api:
            return None  # an API the release could not document: it has no episodes either
        name, description, doc = _api_text(api, source, where)
        instances = require_field(api, "Instances", source, where, list)
        report.apis += 1
        out = []
        for k, inst in enumerate(instances):
            loc = f"{where}, Instances[{k}]"
            question = require_field(inst, "input", source, loc)
            question = question.rsplit("\nHint: ", 1)[0]
            answer = require_field(inst, "output", source, loc, nonempty=False)
            steps_raw = inst.get("intermediate_steps") or []
            if not isinstance(steps_raw, list):
                raise RecordError(source, loc, "intermediate_steps", "must be a list")
            if not steps_raw:
                report.no_steps += 1
                continue
            steps, calls = [], []
            for j, step in enumerate(steps_raw):
                fld = f"intermediate_steps[{j}]"
                try:
                    (action, action_input, log_text), observation = step[0][:3], step[1]
                except (TypeError, ValueError, IndexError):
                    raise RecordError(source, loc, fld, "expected [[action, action_input, log], observation]") from None
                if not isinstance(log_text, str) or not isinstance(observation, str):
                    raise RecordError(source, loc, fld, "the step log and the observation must be strings")
                call = _parse_call(action, action_input, source, loc, fld)
                calls.append(call)
                steps.append((_thought_of(log_text), str(action).strip(),
                              action_input if isinstance(action_input, str) else json.dumps(action_input),
                              observation))
            if any(c is None for c in calls):
                report.unscorable.append(f"{name}: {question.strip()[:80]}")
                continue
            demonstration = render_episode(steps, str(inst.get("Final Thought") or ""), answer)
            out.append(_record(stable_id(TASK, name, question, str(k)), (name, description, doc), question,
                               demonstration, calls, path))
        return out

    return _convert_file(path, convert, report, skip_invalid, split_report)


def _file(data_dir: Path | None, name: str) -> Path:
    if data_dir is not None:
        for candidate in (data_dir / "toolalpaca" / name, data_dir / name):
            if candidate.exists():
                return candidate
        raise DataSourceError(
            f"task {TASK!r}: {data_dir / 'toolalpaca' / name} not found. The local mirror needs {MIRROR_FILES} "
            f"(ToolAlpaca's GitHub release files, {RELEASE_URL.format(name='')}); see data_prep/README.md")
    from sdft.models import cache_dir

    return download(RELEASE_URL.format(name=name), cache_dir() / "data" / "toolalpaca" / name, TASK, MIRROR_FILES)


def load(split: str, data_dir: Path | None, skip_invalid: bool = False,
         report: SplitReport | None = None) -> tuple[list[dict], ToolUseReport]:
    """One split: ``train`` / ``val`` from the training release, ``test`` from the simulated evaluation set. The
    counts also go to ``report`` when one is given."""
    if split == "test":
        records, tool_report = eval_records(_file(data_dir, TEST_FILE), skip_invalid, report)
    else:
        records, tool_report = train_records(_file(data_dir, TRAIN_FILE), skip_invalid, report)
        records = seeded_split(records, split, fractions={"train": 1 - VAL_FRACTION, "val": VAL_FRACTION})
    if tool_report.unscorable:
        log.info("%s", tool_report)
    return records, tool_report
