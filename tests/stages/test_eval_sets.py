"""Evaluation sets of the size a paper needs: prep holds out an exact number of questions, and
eval can grade every question of a data folder (e.g. all of SimpleQA, prepared on its own)."""

from __future__ import annotations

import json

from proactive_rl.shared.paths import DataPaths
from proactive_rl.shared.publish import read_marker
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
