"""The recipe's beta experiment from one command on the tiny model (the smallest settings, as in
CI): three runs over one prep and one SFT, each also graded on another question set, one
comparison report; run again, it redoes only what is missing. How the whole recipe preset
shares its preps and SFTs is tests/unit/test_sweep_plan.py's; a run without SFT runs in
tests/e2e/test_sweep_compose.py (each launch costs seconds: the six-run preset took 200 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import proactive

SMALL = """
name = "recipe"
base_model = "{model}"
jobs = 2
[settings]
prep = ["max_rl_rows=8", "test_fraction=0.5"]
sft = ["epochs=1", "max_length=128"]
grpo = ["prompts_per_step=2", "mini_batch_prompts=2", "max_steps=1", "n=2"]
rollout = ["sampling.max_new_tokens=8", "backend=transformers"]
eval = ["n=2", "sampling.max_new_tokens=8", "backend=transformers", "plots=false",
        "bootstrap_resamples=200"]
"""
# every run also graded on questions of another kind, base and SFT beside the final policy
SETS = """
eval_checkpoints = ["base", "sft", "final"]
eval_sets = {{nq = "{nq}"}}
eval_set_rows = 3
"""
RUNS = ["sft50_rl_beta0.3", "sft50_rl_beta0.5", "sft50_rl_beta0.7"]


def nq_file(path):
    """Three NQ-open-shaped questions (the users' RL JSONL; one with aliases) and one more that
    eval_set_rows leaves out."""
    rows = [("Who sang test song 1?", "A1"), ("When was test 2?", '["1999", "in 1999"]')]
    rows += [("Where is test 3?", "Paris"), ("Left out?", "no")]
    lines = [
        json.dumps({"id": i, "messages": [{"role": "user", "content": q},
                    {"role": "assistant", "content": a}], "sub_category": "nq_open"})
        for i, (q, a) in enumerate(rows)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_the_beta_experiment_in_one_command(workdir, tiny_model):
    nq = nq_file(workdir / "data" / "nq.jsonl")
    (workdir / "small.toml").write_text(
        SETS.format(nq=nq.relative_to(workdir)) + SMALL.format(model=tiny_model)
    )
    proactive("sweep", "--preset", "beta", "--config", "small.toml", cwd=workdir, timeout=1200)

    root = workdir / "checkpoints" / "sweeps" / "recipe"
    report = json.loads((root / "report" / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == RUNS
    assert len(report["references"]) == 1  # one SFT, shared by the three runs
    for row in report["runs"]:
        final = row["final"]
        assert 0 <= final["metrics"]["accuracy"] <= 1
        low, high = final["intervals"]["hallucination_rate"]
        assert low <= final["metrics"]["hallucination_rate"] <= high
        assert row["seconds"] > 0 and row["seeds"]["grpo"] == 42
    configs = {r: json.loads((root / r / "configs" / "rollout.json").read_text()) for r in RUNS}
    assert configs["sft50_rl_beta0.3"]["reward_kwargs"]["beta"] == 0.3
    markdown = (root / "report" / "report.md").read_text()
    assert all(name in markdown for name in RUNS) and "comparison.png" in markdown
    assert (root / "report" / "comparison.png").stat().st_size > 0

    # base and SFT beside the final policy: the shared SFT's epoch and its base model, so the
    # goals and the optimum yardstick have the base's numbers in every run's report
    for name in RUNS:
        for set_name in ("report", "nq"):
            entries = json.loads((root / name / "eval" / set_name / "report.json").read_text())
            entries = entries["checkpoints"]
            assert [c["kind"] for c in entries] == ["base", "sft", "policy"], (name, set_name)
            assert entries[0]["path"] == str(tiny_model)
    # the shared SFT's evaluation sampled base and SFT on the held-out split: every run grades
    # those responses with its own beta (sample_cache). (Policies are sampled unless another
    # run's is the same bytes: one tiny step can leave the three alike.)
    for name in RUNS:
        entries = json.loads((root / name / "eval" / "report" / "report.json").read_text())
        kept = [c["responses_kept_in"] for c in entries["checkpoints"][:2]]
        assert all(k and (workdir / k).parent == root / "eval-samples" for k in kept), kept
    sft_entry = json.loads(
        (root / "sft50_rl_beta0.3" / "eval" / "report" / "report.json").read_text()
    )
    assert Path(sft_entry["checkpoints"][1]["path"]).parent.parent.name.startswith("sft-")
    # the hedging column is the goal's: by the base model's accuracy, from each run's report
    assert "| hedging where base never / always right |" in markdown
    for row in report["runs"]:
        own = json.loads((root / row["name"] / "eval" / "report" / "report.json").read_text())
        assert row["final"]["calibration_by_base"] == own["checkpoints"][-1]["calibration_by_base"]
    for row in report["runs"]:
        assert row["goals"]["goal_hallucination"] in (True, False)
        nq_row = row["sets"]["nq"]
        assert nq_row["questions"] == 3 and nq_row["final"]["optimum"]["questions"] == 3
    assert "## On `nq`" in markdown and "## Against each reward's own optimum" in markdown
    # each final policy beside its base model's oracle frontier, on both sets
    assert markdown.count("| run (vs the oracle frontier) |") == 2
    assert report["runs"][0]["frontier"]["normalised"]["questions"] == 4
    assert report["runs"][0]["sets"]["nq"]["frontier"]["normalised"]["questions"] == 3
    # and beside what hedging by the agreement of the base's and the policy's own samples reaches
    assert markdown.count("final's own agreement") == 2
    first = report["runs"][0]
    assert first["final"]["consistency_frontier"]["normalised"]["samples"] == 4 * first["n"]
    assert first["sets"]["nq"]["final"]["consistency_frontier"]["normalised"]["samples"] == (
        3 * first["n"]
    )

    # an interrupted run: only it is redone; the others and the shared SFTs are kept
    shutil.rmtree(root / "sft50_rl_beta0.7" / "eval")
    shutil.rmtree(root / "sft50_rl_beta0.3" / "eval" / "nq")  # only its NQ grading is redone
    ledger = json.loads((root / "sweep.json").read_text())
    del ledger["steps"]["sft50_rl_beta0.7"]
    (root / "sweep.json").write_text(json.dumps(ledger))
    kept = (root / "logs" / "sft50_rl_beta0.3-grpo.log").stat().st_mtime
    again = proactive("sweep", "--preset", "beta", "--config", "small.toml", cwd=workdir)
    out = again.stdout + again.stderr
    assert "sft50_rl_beta0.3: done earlier, kept" in out
    assert "sft50_rl_beta0.3-eval-nq: done" in out
    assert (root / "sft50_rl_beta0.3" / "eval" / "nq" / "STABLE.json").is_file()
    assert "sft50_rl_beta0.7-eval: done" in out
    assert (root / "logs" / "sft50_rl_beta0.3-grpo.log").stat().st_mtime == kept
    assert (root / "sft50_rl_beta0.7" / "eval" / "report" / "STABLE.json").is_file()


def test_a_failing_step_names_its_log_and_the_sweep_can_be_rerun(workdir, tiny_model):
    (workdir / "small.toml").write_text(SMALL.format(model=tiny_model))
    args = ("sweep", "--preset", "beta", "--config", "small.toml")
    proc = proactive(*args, "--set", 'settings.sft=["epochs=0"]', cwd=workdir, check=False)
    assert proc.returncode == 2
    assert "sweep step sft-" in proc.stderr and "logs/sft-" in proc.stderr
    assert "epochs" in proc.stderr  # the tail of the failed stage's log
    assert "Traceback" not in proc.stderr
    # a rerun appends to the step's log: the attempt before stays readable
    again = proactive(*args, "--set", 'settings.sft=["epochs=0"]', cwd=workdir, check=False)
    assert again.returncode == 2
    (log,) = (workdir / "checkpoints" / "sweeps").glob("*/logs/sft-*.log")
    attempts = log.read_text().split("=== ")[1:]
    assert len(attempts) == 2 and all("proactive_rl.stages.cli sft" in a for a in attempts)
    assert all("epochs" in a for a in attempts)
