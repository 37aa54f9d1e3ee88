"""The judge end to end against a local chat-completions server (http.server in a thread)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval.judge import LLMJudge, UNPARSEABLE, parse_verdict

SECRET = "sk-test-SECRET-7f3a9c"
MARK = re.compile(r"VERDICT=(\w+)")
REPLIES = {"C": "CORRECT", "P": "PARTIALLY_CORRECT", "I": "**INCORRECT**", "G": "It is correct, or maybe incorrect.",
           "PM": "Partially correct"}


class FakeServer:
    def __init__(self):
        self.requests = []  # (headers, body)
        self.failures = []  # status codes to answer before serving
        self.reject_temperature = set()
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
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if server.failures:
                    code = server.failures.pop(0)
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
    ev = evaluate_task(model, tok, recs, "knowledge", max_new_tokens=4, judge=judge)
    metrics = {s["metric"]: s for s in ev["scores"]}
    # the random model's text carries no verdict marker: the fake judge answers "no idea" -> unparseable
    assert metrics["judge_strict_accuracy"]["value"] == 0.0 and metrics["judge_strict_accuracy"]["n_unparseable"] == 3
    assert [p["verdict"] for p in ev["predictions"]] == [UNPARSEABLE] * 3
    sent = [b["messages"][-1]["content"] for _, b in server.requests]
    for i, p in enumerate(ev["predictions"]):
        assert any(f"[Question]\nQuestion number {i}?\n[Reference Answer]\nref {i}\n[Model Response]\n{p['response']}\n"
                   in s for s in sent)
    assert ev["settings"]["judge"]["judge_model"] == "gpt-5-mini"
