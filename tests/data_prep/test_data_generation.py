"""Demonstration and QA generation against a local chat-completions server (http.server in a thread; no real API)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_prep import knowledge, science
from sdft.llm import CachedChatClient


class FakeChatServer:
    """Speaks POST /v1/chat/completions. ``reply(body) -> list[str]`` gives the ``n`` completions of a request."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    self.send_response(404)
                    self.end_headers()
                    return
                texts = server.reply(body)
                payload = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                                for i, t in enumerate(texts)],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def science_reply(body):
    """A fake model: its first sample answers A; a request for n more samples answers B, C, D, A, ..."""
    n = body.get("n", 1)
    if n == 1:
        return ["<reasoning>first try</reasoning>\n<answer>\nA\n</answer>"]
    return [f"<reasoning>try {k}</reasoning>\n<answer>{'BCDA'[k % 4]}</answer>" for k in range(n)]


def _client(server, tmp_path, model="fake-gpt"):
    return CachedChatClient(model=model, base_url=server.base_url, api_key="test-key",
                            cache_path=tmp_path / "cache.sqlite", max_concurrency=2, initial_backoff=0.01)


def _science_mirror(root, answers):
    folder = root / "sciknoweval" / "Chemistry_L3"
    folder.mkdir(parents=True)
    rows = [{"question": f"Question number {i}?", "choices": {"text": [f"opt{i}{c}" for c in "abcd"],
                                                               "label": list("ABCD")},
             "answerKey": a, "type": "mcq-4-choices", "details": {"level": "L3", "task": "t"}}
            for i, a in enumerate(answers)]
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_science_demonstrations_keep_a_correct_sample_and_hit_the_cache(tmp_path):
    _science_mirror(tmp_path, "ABCD" * 5)
    records = science.load_all(tmp_path)
    with FakeChatServer(science_reply) as server:
        client = _client(server, tmp_path)
        demos, report = science.generate_demonstrations(records, client, max_samples=8)
        assert report.questions == 20 and report.valid == 20 and not report.missing
        # A: the first sample; B, C, D: samples 2, 3, 4 of the second request
        assert report.samples_used == {1: 5, 2: 5, 3: 5, 4: 5}
        for rec in records:
            assert f"<answer>{rec['reference']}" in demos[rec["id"]].replace("\n", "")
        assert client.n_requests == 20 + 15 and len(server.requests) == 35
        assert {r.get("n", 1) for r in server.requests} == {1, 7}
        again = _client(server, tmp_path)
        demos2, report2 = science.generate_demonstrations(records, again, max_samples=8)
        assert demos2 == demos and again.n_requests == 0 and again.n_cache_hits == 35
        assert len(server.requests) == 35  # the rerun sent nothing


def test_science_question_without_a_correct_sample_is_reported(tmp_path):
    _science_mirror(tmp_path, "AB")
    records = science.load_all(tmp_path)
    with FakeChatServer(lambda body: ["<answer>A</answer>"] * body.get("n", 1)) as server:
        demos, report = science.generate_demonstrations(records, _client(server, tmp_path), max_samples=3)
    assert report.valid == 1 and len(report.missing) == 1 and len(demos) == 1
    assert "1/2" in str(report)


def qa_reply(body):
    system = body["messages"][0]["content"]
    article = body["messages"][-1]["content"]
    tag = article.split()[0]
    if system == knowledge.QA_PROMPT:
        return [f"Question: What happened in {tag}?\nAnswer: A flood in {tag}.\n\n"
                f"Question: what happened in {tag}\nAnswer: duplicate\n\n"
                f"Question: How many died in {tag}?\nAnswer: 12 people.\n"]
    return [f"Question: Which place flooded in 2025 ({tag})?\nAnswer: {tag}\n"]


def test_knowledge_qa_generation_dedupes_and_caches(tmp_path):
    articles = [{"title": "Alpha flood", "text": "Alpha had a flood."}, {"title": "Beta flood", "text": "Beta too."}]
    with FakeChatServer(qa_reply) as server:
        rows, report = knowledge.generate_qa(articles, _client(server, tmp_path), n_indirect=3)
        assert len(server.requests) == 4  # one direct and one indirect request per article
        assert server.requests[0]["messages"][0]["content"] == knowledge.QA_PROMPT
        assert report.per_article["Alpha flood"] == {"direct": 2, "indirect": 1, "duplicates": 1}
        assert [r["kind"] for r in rows].count("indirect") == 2 and len(rows) == 6
        again = _client(server, tmp_path)
        rows2, _ = knowledge.generate_qa(articles, again, n_indirect=3)
        assert rows2 == rows and again.n_requests == 0 and len(server.requests) == 4


def test_prepare_cli_generates_and_writes_deterministic_splits(tmp_path, monkeypatch):
    from data_prep import prepare

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    data = tmp_path / "mirror"
    _science_mirror(data, "ABCD" * 10)
    with FakeChatServer(science_reply) as server:
        argv = ["--task", "science", "--data-dir", str(data), "--output", str(tmp_path / "out"), "--generate",
                "--model", "fake-gpt", "--base-url", server.base_url, "--cache", str(tmp_path / "c.sqlite"),
                "--concurrency", "2"]
        manifest = prepare.main(argv)
        sent = len(server.requests)
        first = {s: (tmp_path / "out" / "science" / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test")}
        manifest2 = prepare.main(argv)
        assert len(server.requests) == sent  # every request came from the cache
    assert manifest["generation"]["valid"] == manifest["generation"]["questions"] == 30
    assert manifest2["generation"]["requests_sent"] == 0
    assert {s: f["records"] for s, f in manifest["files"].items()} == {"train": 30, "val": 2, "test": 8}
    assert manifest["files"] == manifest2["files"]
    for split, blob in first.items():
        assert blob == (tmp_path / "out" / "science" / f"{split}.jsonl").read_bytes()
    train = [json.loads(line) for line in first["train"].decode().splitlines()]
    assert all("<answer>" in r["demonstration"] for r in train)
    written = json.loads((tmp_path / "out" / "science" / "manifest.json").read_text())
    assert written["source"] == "mirror" and written["files"]["test"]["sha256"]


def test_prepare_cli_writes_real_tooluse_test_split(shared_data, tmp_path):
    from data_prep import prepare

    manifest = prepare.main(["--task", "tooluse", "--data-dir", str(shared_data), "--output", str(tmp_path),
                             "--splits", "test"])
    assert manifest["files"]["test"]["records"] == 69
    lines = (tmp_path / "tooluse" / "test.jsonl").read_text().splitlines()
    assert len(lines) == 69 and json.loads(lines[0])["task"] == "tooluse"


def test_generation_needs_a_model(tmp_path):
    from data_prep import prepare

    _science_mirror(tmp_path, "AB")
    with pytest.raises(SystemExit, match="--model"):
        prepare.main(["--task", "science", "--data-dir", str(tmp_path), "--output", str(tmp_path / "o"), "--generate"])
