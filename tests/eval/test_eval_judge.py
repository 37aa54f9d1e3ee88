"""The judge end to end against a local chat-completions server (http.server in a thread)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_prep.registry import get_task
from eval.judge import LLMJudge, UNPARSEABLE, parse_verdict

SECRET = "sk-test-SECRET-7f3a9c"
MARK = re.compile(r"VERDICT=(\w+)")
REPLIES = {"C": "CORRECT", "P": "PARTIALLY_CORRECT", "I": "**INCORRECT**", "G": "It is correct, or maybe incorrect.",
           "PM": "Partially correct", "N": "The response is NOT CORRECT.", "L": "The reference says " + "x" * 400}


class FakeServer:
    def __init__(self):
        self.requests = []  # (headers, body)
        self.failures = []  # status codes to answer before serving
        self.reject_temperature = set()
        self.paths = []  # request targets, query string included
        self.hang_when = None  # body -> bool: hold the request unanswered until close()
        self.released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                server.paths.append(self.path)
                if server.hang_when is not None and server.hang_when(body):
                    server.released.wait(30)
                    return
                if not self.path.split("?")[0].endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if server.failures:
                    code = server.failures.pop(0)
                    if code == "html":  # HTTP 200 with a body that is no JSON (a proxy's error page)
                        page = b"<html><body>502 upstream</body></html>"
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(page)))
                        self.end_headers()
                        return self.wfile.write(page)
                    return self._send(code, {"error": {"message": f"injected {code}", "type": "server_error"}})
                model = body["model"]
                if "temperature" in body and (model.startswith("gpt-5") or model in server.reject_temperature):
                    return self._send(400, {"error": {"message": "Unsupported value: 'temperature' does not support 0 "
                                                      "with this model.", "type": "invalid_request_error",
                                                      "param": "temperature", "code": "unsupported_value"}})
                prompt = body["messages"][-1]["content"]
                response_part = prompt.split("[Model Response]", 1)[1]
                m = MARK.search(response_part)
                text = REPLIES[m.group(1)] if m else "no idea"
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    s = FakeServer()
    monkeypatch.setenv("OPENAI_BASE_URL", s.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    yield s
    s.close()


def _judge(tmp_path, model="gpt-5-mini", **kw):
    return LLMJudge(model=model, cache_path=tmp_path / "cache.sqlite", initial_backoff=0.01, max_concurrency=2, **kw)


def test_knowledge_labels_strict_lenient_and_cache(server, tmp_path):
    marks = ["C", "P", "I", "C", "G", "PM", "I"]
    responses = [f"answer {i} VERDICT={m}" for i, m in enumerate(marks)]
    questions = [f"question {i}?" for i in range(len(marks))]
    refs = [f"reference {i}" for i in range(len(marks))]
    judge = _judge(tmp_path)
    res = judge.judge("knowledge", questions, refs, responses)
    expected = {"C": "CORRECT", "P": "PARTIALLY_CORRECT", "I": "INCORRECT", "G": UNPARSEABLE, "PM": "PARTIALLY_CORRECT"}
    assert res.verdicts == [expected[m] for m in marks]
    n_c = sum(v == "CORRECT" for v in res.verdicts)
    n_p = sum(v == "PARTIALLY_CORRECT" for v in res.verdicts)
    assert res.summary["strict_accuracy"] == pytest.approx(n_c / len(marks))
    assert res.summary["lenient_accuracy"] == pytest.approx((n_c + n_p) / len(marks))
    assert res.summary["n_unparseable"] == 1 and res.summary["counts"][UNPARSEABLE] == 1
    # the paper's prompt was sent, with the question, reference and response filled in
    sent = [b["messages"][-1]["content"] for _, b in server.requests]
    assert any("[Reference Answer]\nreference 3\n" in s and "PARTIALLY_CORRECT" in s for s in sent)
    # gpt-5-mini: no temperature sent
    assert all("temperature" not in b for _, b in server.requests)
    assert all(h.get("authorization") == f"Bearer {SECRET}" for h, _ in server.requests)
    n_before = len(server.requests)
    assert judge.client.n_requests == len(marks)

    # second run, new judge object, same cache: zero requests reach the server
    judge2 = _judge(tmp_path)
    res2 = judge2.judge("knowledge", questions, refs, responses)
    assert res2.verdicts == res.verdicts
    assert len(server.requests) == n_before and judge2.client.n_requests == 0


def test_retry_after_429_and_500(server, tmp_path):
    server.failures = [429, 500, 503]
    judge = _judge(tmp_path, model="judge-small")
    res = judge.judge("medical", ["q?"], ["ref"], ["VERDICT=C"])
    assert res.verdicts == ["CORRECT"] and res.summary["accuracy"] == 1.0
    assert len(server.requests) == 4 and judge.client.n_requests == 4
    # a non-reasoning model gets temperature 0
    assert all(b.get("temperature") == 0 for _, b in server.requests)


def test_gives_up_after_max_retries(server, tmp_path):
    server.failures = [500] * 10
    judge = _judge(tmp_path, model="judge-small", max_retries=2)
    with pytest.raises(RuntimeError, match="giving up after 3 attempts"):
        judge.judge("medical", ["q?"], ["ref"], ["VERDICT=C"])
    assert len(server.requests) == 3


def test_a_reply_that_is_not_json_is_retried_then_named_with_its_endpoint(server, tmp_path):
    from sdft.errors import UserError

    server.failures = ["html"]
    judge = _judge(tmp_path, model="judge-small")
    assert judge.judge("medical", ["q?"], ["ref"], ["VERDICT=C"]).verdicts == ["CORRECT"]
    assert len(server.requests) == 2
    server.failures = ["html"] * 10
    judge = _judge(tmp_path, model="judge-small", max_retries=1)
    with pytest.raises(UserError, match=r"^judge-small at http://127\.0\.0\.1:\d+/v1: giving up after 2 attempts: "
                                        r"the reply is not JSON \(Expecting value"):
        judge.judge("medical", ["another q?"], ["ref"], ["VERDICT=C"])


def test_temperature_rejected_falls_back(server, tmp_path):
    server.reject_temperature.add("picky-model")
    judge = _judge(tmp_path, model="picky-model")
    res = judge.judge("medical", ["q?", "q2?"], ["r", "r"], ["VERDICT=I", "VERDICT=P"])
    # medical allows CORRECT / INCORRECT only: PARTIALLY_CORRECT is unparseable there
    assert res.verdicts == ["INCORRECT", UNPARSEABLE]
    assert res.summary["accuracy"] == 0.0 and res.summary["n_unparseable"] == 1
    assert any("temperature" in b for _, b in server.requests)
    assert any("temperature" not in b for _, b in server.requests)


def test_no_api_key_in_written_files(server, tmp_path):
    judge = _judge(tmp_path)
    res = judge.judge("knowledge", ["q?"], ["r"], ["VERDICT=C"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({**res.summary, **judge.settings()}))
    (out / "verdicts.jsonl").write_text("\n".join(json.dumps({"v": v, "raw": r}) for v, r in zip(res.verdicts, res.raw)))
    (out / "repr.txt").write_text(repr(judge.client))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    assert server.requests and server.requests[0][0]["authorization"].endswith(SECRET)


def test_parse_verdict_cases():
    assert parse_verdict("CORRECT", "medical") == "CORRECT"
    assert parse_verdict(" incorrect.", "medical") == "INCORRECT"
    assert parse_verdict('"PARTIALLY_CORRECT"', "knowledge") == "PARTIALLY_CORRECT"
    assert parse_verdict("PARTIALLY_CORRECT", "medical") == UNPARSEABLE
    assert parse_verdict("", "knowledge") == UNPARSEABLE
    assert parse_verdict("CORRECT. Not INCORRECT.", "knowledge") == UNPARSEABLE
    assert parse_verdict("Verdict: CORRECT\nThe response is CORRECT", "knowledge") == "CORRECT"


def test_evaluate_task_with_judge(server, tmp_path):
    """evaluate_task on a judged task: the judge sees the question, reference and the model's response."""
    from eval.task_eval import evaluate_task
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    recs = [{"id": f"k{i}", "task": "knowledge", "prompt": [{"role": "user", "content": f"Question number {i}?"}],
             "demonstration": "d", "reference": f"ref {i}", "meta": {}} for i in range(3)]
    judge = _judge(tmp_path)
    ev = evaluate_task(model, tok, recs, get_task("knowledge"), max_new_tokens=4, judge=judge)
    metrics = {s["metric"]: s for s in ev["scores"]}
    # the random model's text carries no verdict marker: the fake judge answers "no idea" -> unparseable
    assert metrics["judge_strict_accuracy"]["value"] == 0.0 and metrics["judge_strict_accuracy"]["n_unparseable"] == 3
    assert [p["verdict"] for p in ev["predictions"]] == [UNPARSEABLE] * 3
    sent = [b["messages"][-1]["content"] for _, b in server.requests]
    for i, p in enumerate(ev["predictions"]):
        assert any(f"[Question]\nQuestion number {i}?\n[Reference Answer]\nref {i}\n[Model Response]\n{p['response']}\n"
                   in s for s in sent)
    assert ev["settings"]["judge"]["judge_model"] == "gpt-5-mini"


# ------------------------------------------------------------------------------------------------ a judge that never guesses
U = UNPARSEABLE


def _cases(kind, expected, *replies):
    return [(r, kind, expected) for r in replies]


VERDICTS = [  # (reply, kind, expected): the rule of eval/judge.py's docstring
    # the label as the whole reply: case, whitespace, quotes, one trailing period, markdown and code wrappers
    *_cases("medical", "CORRECT", "CORRECT", "correct", "  CORRECT  \n", "CORRECT.", "**CORRECT**"),
    *_cases("medical", "INCORRECT", "INCORRECT", '"INCORRECT".', "```\nINCORRECT\n```"),
    *_cases("knowledge", "CORRECT", "“CORRECT”"),
    *_cases("knowledge", "INCORRECT", "Incorrect", "__INCORRECT__"),
    *_cases("knowledge", "PARTIALLY_CORRECT", "PARTIALLY_CORRECT", "`PARTIALLY_CORRECT`", "partially correct",
            "Partially-Correct."),
    # a label the task does not allow
    *_cases("medical", U, "PARTIALLY_CORRECT", "**Partially correct**"),
    # the label alone on its own line after reasoning, or a Verdict: line
    *_cases("medical", "CORRECT", "The response names the same drug as the reference.\n\nCORRECT", "CORRECT\nCORRECT"),
    *_cases("medical", "INCORRECT", "It misses the dosage, a key point.\n**INCORRECT**", "Verdict: INCORRECT"),
    *_cases("knowledge", "PARTIALLY_CORRECT", "It gives the year but not the place.\nPARTIALLY_CORRECT\n",
            "Final verdict: PARTIALLY CORRECT"),
    *_cases("knowledge", "CORRECT", "**Verdict:** correct"),
    # negations
    *_cases("medical", U, "The response is NOT CORRECT.", "NOT CORRECT", "Verdict: NOT CORRECT", "This isn't correct."),
    *_cases("knowledge", U, "not incorrect", "The answer is not entirely correct.\nCORRECT"),
    # hedges and prose
    *_cases("medical", U, "I cannot say whether it is correct", "probably correct", "The response is correct."),
    *_cases("knowledge", U, "Probably CORRECT.", "CORRECT, mostly", "I think the response is correct"),
    # two different labels
    *_cases("medical", U, "CORRECT or INCORRECT", "CORRECT\nINCORRECT", "CORRECT\nOn reflection the response is INCORRECT."),
    *_cases("knowledge", U, "Verdict: CORRECT\nIt is partially correct at best.", "It is correct, or maybe incorrect."),
    # empty, no label, labels inside other words
    *_cases("medical", U, "", None, "The response correctly names the drug.", "CORRECTLY"),
    *_cases("knowledge", U, "   \n\n", "no idea"),
]
assert len(VERDICTS) == 47


@pytest.mark.parametrize("reply,kind,expected", VERDICTS, ids=[f"{k}:{r!r}"[:60] for r, k, _ in VERDICTS])
def test_verdict_table(reply, kind, expected):
    assert parse_verdict(reply, kind) == expected


def test_a_negated_verdict_is_not_correct(server, tmp_path, capsys):
    """A server answering "The response is NOT CORRECT." scores 0%, not 100%, and the console says so."""
    res = _judge(tmp_path, model="judge-small").judge("medical", ["q?"], ["ref"], ["VERDICT=N"])
    assert res.verdicts == [UNPARSEABLE] and res.summary["accuracy"] == 0.0 and res.summary["n_unparseable"] == 1
    assert "1 of 1 verdicts unparseable" in capsys.readouterr().err


def test_unparseable_verdicts_are_printed_with_their_first_replies(server, tmp_path, capsys):
    judge = _judge(tmp_path)
    marks = ["C", "G", "L", "I", "N", "PM"]
    res = judge.judge("knowledge", ["q?"] * len(marks), ["r"] * len(marks), [f"a{i} VERDICT={m}" for i, m in enumerate(marks)])
    assert res.summary["n_unparseable"] == 3
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "unparseable" in x]
    assert "3 of 6 verdicts unparseable" in line
    assert repr(REPLIES["G"]) in line and repr(REPLIES["N"]) in line
    assert "x" * 100 in line and "x" * 400 not in line  # long replies are cut
    judge.judge("knowledge", ["q?"], ["r"], ["VERDICT=C"])
    assert "unparseable" not in capsys.readouterr().err


def test_a_hanging_endpoint_fails_within_the_deadline(server, tmp_path, capsys):
    from sdft.llm import DeadlineExceeded

    server.hang_when = lambda body: "VERDICT=H" in body["messages"][-1]["content"]
    judge = _judge(tmp_path, model="judge-small", timeout=0.5, deadline=2)
    with pytest.raises(DeadlineExceeded) as info:  # the deadline, not the hang, ends it (the message says which)
        judge.judge("medical", ["q1?", "q2?"], ["r", "r"], ["VERDICT=C", "VERDICT=H"])
    msg = str(info.value)
    assert "no reply within the 2 s deadline" in msg and "1 of 2 requests of this batch completed" in msg
    assert server.url in msg and "APITimeoutError" in msg
    retries = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[llm]")]
    assert retries and all(server.url in x and "(APITimeoutError); retrying in" in x for x in retries)
    assert retries[0].endswith("attempt 1 of 7 failed (APITimeoutError); retrying in 0.01 s")


def test_a_failed_request_stops_its_batch(server, tmp_path):
    """A hanging endpoint: once the requests in flight pass their deadline, the rest of the batch is not sent."""
    from sdft.llm import DeadlineExceeded

    server.hang_when = lambda body: True
    judge = _judge(tmp_path, model="judge-small", timeout=0.3, deadline=1)  # two requests in flight
    with pytest.raises(DeadlineExceeded, match="0 of 6 requests of this batch completed"):
        judge.judge("medical", [f"q{i}?" for i in range(6)], ["r"] * 6, ["VERDICT=C"] * 6)
    sent = {b["messages"][-1]["content"].split("[Medical Question]\n", 1)[1].split("\n", 1)[0] for _, b in server.requests}
    assert len(sent) <= 2 and sent <= {"q0?", "q1?"}


def test_default_time_limits_fail_within_a_few_minutes(tmp_path):
    judge = _judge(tmp_path)
    assert judge.client.timeout <= judge.client.deadline <= 300
    assert judge.settings()["judge_deadline_s"] == judge.client.deadline


def test_redact_url():
    from sdft.llm import redact_url

    assert redact_url("https://user:pw@api.example.com:8443/v1?key=k&x=1#f") == "https://api.example.com:8443/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://token@host/v1/") == "https://host/v1/"
    assert redact_url(None) is None


@pytest.fixture
def toy_judged_task():
    from data_prep.registry import TASKS, Task, register_task

    def load(split, seed=0, n=None, data_dir=None):
        return [{"id": f"t{i}", "task": "toy_judged", "prompt": [{"role": "user", "content": f"Question {i}?"}],
                 "demonstration": "d", "reference": f"ref {i}", "meta": {}} for i in range(n or 2)]

    task = register_task(Task("toy_judged", load=load, judge="medical", metric="judge_accuracy", title="Toy judged"))
    yield task
    TASKS.pop(task.name)


@pytest.mark.parametrize("url_form", ["query", "userinfo"])
def test_a_key_in_the_base_url_is_written_nowhere(server, tmp_path, monkeypatch, toy_judged_task, url_form):
    from eval import evaluate
    from eval.config import build_eval_config

    url_secret = "urlSECRET-42"
    host = server.url.split("://", 1)[1]
    url = f"{server.url}?key={url_secret}" if url_form == "query" else f"http://user:{url_secret}@{host}"
    judge = LLMJudge(base_url=url, cache_path=tmp_path / "cache.sqlite", initial_backoff=0.01)
    out = tmp_path / "out"
    result = evaluate("embedded:tiny-llama", toy_judged_task, build_eval_config({"n": 2, "max_new_tokens": 4}),
                      judge=judge, output_dir=out)
    assert result["evaluations"]["student"]["settings"]["judge"]["judge_base_url"] == server.url
    assert url_secret not in repr(judge.client)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"eval.json", "predictions_student.jsonl", "cache.sqlite"} <= {p.name for p in files}
    for p in files:
        assert url_secret.encode() not in p.read_bytes(), p
        assert SECRET.encode() not in p.read_bytes(), p
    if url_form == "query":  # the query string reached the endpoint as query parameters, not glued into the path
        assert server.paths and all(p == f"/v1/chat/completions?key={url_secret}" for p in server.paths)


def test_eval_run_reaches_the_judge_time_limits(server, tmp_path, monkeypatch, toy_judged_task):
    from eval.run import main, parse_command_line

    monkeypatch.setattr("sdft.llm.default_cache_path", lambda: tmp_path / "cache.sqlite")

    cfg = parse_command_line(["--model", "embedded:tiny-llama", "--judge-timeout", "0.5", "--judge-deadline", "2"])[1]
    assert (cfg.judge_timeout, cfg.judge_deadline) == (0.5, 2.0)
    server.hang_when = lambda body: True
    with pytest.raises(SystemExit, match=r"error: gpt-5-mini at http://127\.0\.0\.1:\d+/v1: no reply within the 2 s"):
        main(["--model", "embedded:tiny-llama", "--task", "toy_judged", "--n", "1", "--max-new-tokens", "2",
              "--judge-timeout", "0.5", "--judge-deadline", "2", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "eval.json").exists()
