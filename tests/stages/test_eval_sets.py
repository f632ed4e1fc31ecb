"""Evaluation sets of the size a paper needs: prep holds out an exact number of questions, and
eval can grade every question of a data folder (e.g. all of SimpleQA, prepared on its own)."""

from __future__ import annotations

import json

from proactive_rl.shared.paths import DataPaths
from proactive_rl.shared.publish import read_marker
from proactive_rl.stages.eval import judge
from tests.conftest import proactive


def test_an_exact_test_split_and_eval_over_all_questions(workdir, tiny_model):
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_rows=5", cwd=workdir)
    rows = read_marker(DataPaths(workdir / "data").processed)["rows"]
    assert (rows["rl_train"], rows["rl_test"]) == (7, 5)

    run = workdir / "checkpoints" / "any"
    common = ["--run-dir", str(run), "--set", f"checkpoints={tiny_model}", "--set", "n=1"]
    common += ["--set", "sampling.max_new_tokens=4", "--set", "plots=false"]
    proactive("eval", *common, "--set", "split=all", "--set", "name=all", cwd=workdir)
    report = json.loads((run / "eval" / "all" / "report.json").read_text())
    assert report["questions"] == 12 and report["split"] == "all"
    samples = (run / "eval" / "all" / "samples.jsonl").read_text().splitlines()
    assert len({json.loads(line)["question_index"] for line in samples}) == 12


def test_an_llm_judge_grades_every_answer_beside_the_rules(workdir, tiny_model):
    """The tiny model as its own judge: its replies are mostly not a verdict, which the report
    must count rather than hide; every answer is put to the judge."""
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_rows=4", cwd=workdir)
    run = workdir / "checkpoints" / "judged"
    args = ["--run-dir", str(run), "--set", f"checkpoints={tiny_model}", "--set", "n=2"]
    args += ["--set", "sampling.max_new_tokens=4", "--set", "plots=false"]
    proactive("eval", *args, "--set", f"judge={tiny_model}", cwd=workdir)
    report = json.loads((run / "eval" / "report" / "report.json").read_text())
    view = report["checkpoints"][0]["judge"]
    assert view["agreement"]["graded"] + view["agreement"]["unparsed"] == 4 * 2
    samples = [json.loads(line) for line in (run / "eval" / "report" / "samples.jsonl").open()]
    assert len(samples) == 8
    for s in samples:
        assert s["grade_judge"] == judge.parse_verdict(s["judge_reply"])
    assert "## LLM judge" in (run / "eval" / "report" / "report.md").read_text()


def test_a_missing_judge_is_refused_before_any_sampling(workdir, tiny_model):
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_rows=4", cwd=workdir)
    run = workdir / "checkpoints" / "nojudge"
    proc = proactive(
        "eval", "--run-dir", str(run), "--set", f"checkpoints={tiny_model}",
        "--set", "judge=no/such/model", cwd=workdir, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "judge=no/such/model: not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr and not (run / "eval" / "report").exists()
