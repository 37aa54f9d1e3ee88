"""Table 1 / Figure 7 (knowledge acquisition): the section end to end on smoke, its judge path, its bookkeeping."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, run_section

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-table1-SECRET-19c2"


def _run(args, env_extra=None, cwd=ROOT):
    return run_section("table1", *args, cwd=cwd, env=env_extra)


@pytest.mark.slow
def test_run_table1_smoke_writes_the_table_the_figure_and_the_teacher_view(tmp_path):
    out = tmp_path / "table1"
    proc = _run(["--preset", "smoke", "--jobs", "2", "--results-dir", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("table1.md", "table1.csv", "figure7_teacher_context.png", "figure7_teacher_context.pdf",
                 "teacher_view/teacher_view.csv"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "table1.csv")
    assert table["method"].tolist() == ["base", "rag", "cpt", "sft", "sdft"]
    assert table[["strict", "lenient", "ood"]].notna().all().all()
    assert (table["lenient"] >= table["strict"]).all()  # CORRECT is a subset of CORRECT or PARTIALLY_CORRECT
    assert (table["n_items_in_distribution"] > 0).all() and (table["n_items_ood"] > 0).all()
    # one SDFT run per teacher context, each recording its context; Table 1 reads the article + answer one
    import yaml

    configs = {p.parent.name: yaml.safe_load(p.read_text())
               for p in (out / "embedded_knowledge" / "sdft").glob("*/config.yaml")}
    assert {name: c["teacher_context"] for name, c in configs.items()} == {
        "ctx-answer_seed0": "answer", "ctx-text_seed0": "text", "ctx-text-answer_seed0": "text+answer"}
    template = {c["teacher_template"] for c in configs.values()}
    assert len(template) == 1  # one template for the three contexts: Figure 7 varies the context only
    view = pd.read_csv(out / "teacher_view" / "teacher_view.csv")
    t = template.pop()
    assert view["prompt"].tolist() == ["student", f"teacher ({t})", f"teacher ({t}, text)",
                                       f"teacher ({t}, text+answer)"]
    md = (out / "table1.md").read_text()
    assert "Judge: facts" in md and "*paper: SDFT (ours)*" in md and "no LLM judge calls" in proc.stdout
    # no prior suite in Table 1's evaluations
    assert all(not json.loads(p.read_text()).get("prior") for p in out.glob("*/*/*/eval.json"))
    # a second invocation skips every run and only re-aggregates
    again = _run(["--preset", "smoke", "--results-dir", str(out)])
    assert again.returncode == 0 and again.stdout.count("skipped") == 7, again.stdout[-2000:]


class _JudgeServer:
    """A chat-completions endpoint that answers the knowledge prompt: CORRECT when the reference answer's text
    appears in the model's response, else INCORRECT."""

    def __init__(self):
        self.prompts: list[str] = []
        self.auth: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                server.prompts.append(prompt)
                server.auth.add(self.headers.get("Authorization", ""))
                reference = re.search(r"\[Reference Answer\]\n(.*?)\n\[Model Response\]", prompt, re.S).group(1)
                response = prompt.split("[Model Response]\n", 1)[1]
                verdict = "CORRECT" if reference.strip().lower() in response.lower() else "INCORRECT"
                data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": verdict}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_run_table1_smoke_with_an_llm_judge_sends_the_estimated_calls_and_no_key(tmp_path):
    server = _JudgeServer()
    try:
        out = tmp_path / "table1"
        env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": SECRET, "SDFT_CACHE": str(tmp_path / "cache")}
        # one run at a time (nothing trains: Base and RAG only evaluate), so that the second finds the first's
        # verdicts in the cache; runs in parallel processes can ask for the same verdict at once
        proc = _run(["--preset", "smoke", "--methods", "base,rag", "--judge-model", "local-judge",
                     "--results-dir", str(out)], env_extra=env)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    estimate = int(re.search(r"about (\d+) judge calls", proc.stdout).group(1))
    judged = [json.loads(p.read_text()) for p in out.glob("*/*/*/eval.json")]
    verdicts = sum(next(s["n"] for s in e["evaluations"][v]["scores"] if s["metric"] == "judge_strict_accuracy")
                   for e in judged for v in e["evaluations"])
    assert verdicts == estimate > 0  # the printed estimate is the number of answers judged
    # every distinct request reached the endpoint once; repeats (the same answer to the same question) are cached
    assert len(server.prompts) == len(set(server.prompts)) > 0
    assert server.auth == {f"Bearer {SECRET}"}
    assert all("[Reference Answer]" in p and "PARTIALLY_CORRECT" in p for p in server.prompts)  # the knowledge prompt
    settings = json.loads((out / "embedded_knowledge" / "rag" / "seed0" / "eval.json").read_text())
    assert settings["evaluations"]["rag"]["settings"]["judge"]["judge_model"] == "local-judge"
    assert "Judge: local-judge" in (out / "table1.md").read_text()
    for path in tmp_path.rglob("*"):  # the key reaches the endpoint and nothing else
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_paper_dry_run_prints_the_grid_per_method_and_the_judge_calls():
    proc = paper_dry_run("table1", "--sweep")
    # Table 4's grids: SFT 3 lr x 2 epochs x 3 batch = 18; CPT 3 x 4 = 12; SDFT 3 x 3 x 3 x 3 = 81 per context
    assert "[table1] preset paper: 825 runs (base: 3, rag: 3, cpt: 36, sft: 54, sdft: 729)" in proc.stdout
    assert re.search(r"LLM judge \(gpt-5-mini\): about \d+ judge calls", proc.stdout)


def test_knowledge_scores_pool_the_in_distribution_kinds_by_item_count(tmp_path):
    from experiments.table1 import knowledge_scores

    def score(metric, value, n):
        return {"metric": metric, "value": value, "unit": "percent", "n": n}

    run = tmp_path / "run"
    run.mkdir()
    scores = [score("judge_strict_accuracy", 0, 0), score("judge_lenient_accuracy", 0, 0),
              score("judge_strict_accuracy_direct", 50.0, 60), score("judge_lenient_accuracy_direct", 75.0, 60),
              score("judge_strict_accuracy_paraphrased", 25.0, 40),
              score("judge_lenient_accuracy_paraphrased", 50.0, 40),
              score("judge_strict_accuracy_indirect", 10.0, 50), score("judge_lenient_accuracy_indirect", 20.0, 50)]
    (run / "eval.json").write_text(json.dumps({"evaluations": {"student": {"scores": scores}}}))
    got = knowledge_scores(run, "sft")
    # by hand: strict (0.5*60 + 0.25*40) / 100 = 40 %, lenient (0.75*60 + 0.5*40) / 100 = 65 %
    assert got["strict"] == pytest.approx(40.0) and got["lenient"] == pytest.approx(65.0)
    assert (got["n_strict"], got["ood"], got["n_ood"], got["ood_lenient"]) == (100, 10.0, 50, 20.0)
    assert got["strict_final"] == got["strict"]  # no checkpoint chosen on validation: the final model is reported
    # a checkpoint chosen on validation: the final model's strict accuracy, pooled the same way, from final_test
    final = [score("judge_strict_accuracy_direct", 20.0, 60), score("judge_strict_accuracy_paraphrased", 80.0, 40),
             score("judge_strict_accuracy_indirect", 90.0, 50)]
    (run / "eval.json").write_text(json.dumps({"evaluations": {"student": {"scores": scores}}, "checkpoint": {
        "chosen_step": 8, "final_step": 16, "final_test": {"student": {"scores": final}}}}))
    got = knowledge_scores(run, "sft")
    assert got["strict"] == pytest.approx(40.0) and got["strict_final"] == pytest.approx(44.0)  # (12 + 32) / 100
