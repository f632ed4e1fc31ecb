"""scripts/demo_progress.py: the progress lines `make demo` prints while its containers run,
read from a run directory built here the way the stages write it (status files, metrics.jsonl,
plan.json, configs)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo_progress.py"


def _load():
    spec = importlib.util.spec_from_file_location("demo_progress", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dp = _load()


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _metrics(run: Path, stage: str, records: list[dict], tail: str = "") -> None:
    path = run / "logs" / stage / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _status(run: Path, stage: str, state: str, error: str | None = None) -> None:
    _write(
        run / "status" / f"{stage}.json", {"state": state, "error": error, "boot": "b", "seq": 1}
    )


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run in the middle of GRPO: SFT done (8 steps: 4 an epoch, 2 epochs), GRPO at step 2
    of 4, eval not started."""
    run = tmp_path / "demo"
    _write(run / "configs" / "sft.json", {"epochs": 2})
    sft = [
        {"step": s, "epoch": s / 4, "loss": 1.0 / s, "time": 1000.0 + 2 * s} for s in range(1, 9)
    ]
    # The trainer's closing record has no loss (the last logged one is shown); a line the
    # writer is still appending is skipped, not an error.
    sft.append({"step": 8, "epoch": 2.0, "train_runtime": 16.0, "time": 1017.0})
    _metrics(run, "sft", sft, tail='{"step": 9, "lo')
    _status(run, "sft", "done")
    _write(run / "policies" / "plan.json", {"total_steps": 4, "n": 4})
    grpo = [
        {"step": 0, "reward/mean": 0.25, "reward/proactive_rate": 0.1, "time": 2000.0},
        {"step": 1, "reward/mean": 0.4125, "reward/proactive_rate": 0.25, "time": 2030.0},
    ]
    _metrics(run, "grpo", grpo)
    _status(run, "grpo", "running")
    _status(run, "rollout", "running")
    return run


def test_sft_line_shows_step_of_total_loss_and_no_time_left_when_finished(run: Path) -> None:
    seen = dp.observe(run)
    assert dp.step_line("sft", seen["sft"]) == "progress: sft     step 8/8  loss 0.125"


def test_sft_time_left_comes_from_the_pace_of_its_logged_steps(run: Path) -> None:
    # 3 of 8 steps logged, 2 s apart: 5 steps left at 2 s each.
    records = [{"step": s, "epoch": s / 4, "loss": 0.5, "time": 2.0 * s} for s in range(1, 4)]
    _metrics(run, "sft", records)
    _status(run, "sft", "running")
    line = dp.step_line("sft", dp.observe(run)["sft"])
    assert line == "progress: sft     step 3/8  loss 0.500  ~10 s left"


def test_grpo_line_counts_steps_done_from_the_plan_with_reward_and_hedging(run: Path) -> None:
    line = dp.step_line("grpo", dp.observe(run)["grpo"])
    # step 1 logged = 2 of the plan's 4 done; 30 s a step, 2 left.
    assert line == "progress: grpo    step 2/4  reward 0.412, hedged 25%  ~60 s left"


def test_eval_line_names_the_checkpoint_and_its_rates_of_the_default_three(run: Path) -> None:
    (run / "sft" / "epoch_000002").mkdir(parents=True)
    (run / "policies" / "step_000004").mkdir(parents=True)
    _status(run, "eval", "running")
    _metrics(
        run,
        "eval",
        [
            {
                "step": 0,
                "checkpoint": "base",
                "eval/format_rate": 0.0,
                "eval/accuracy": 0.25,
                "eval/proactive_rate": 0.0,
                "time": 5.0,
            }
        ],
    )
    line = dp.step_line("eval", dp.observe(run)["eval"])
    assert line == "progress: eval    checkpoint 1/3  base: well formed 0%, correct 25%, hedged 0%"


def test_eval_without_a_status_file_runs_from_its_config_to_its_published_report(
    run: Path,
) -> None:
    assert dp.observe(run)["eval"].state is None
    _write(run / "configs" / "eval.json", {"name": "demo-report"})
    assert dp.observe(run)["eval"].state == "running"
    _write(run / "eval" / "demo-report" / "STABLE.json", {"files": {}})
    assert dp.observe(run)["eval"].state == "done"


def test_watcher_prints_each_change_once_and_throttles_step_lines(run: Path) -> None:
    watcher = dp.Watcher(min_gap=10.0)
    first = watcher.lines(dp.observe(run), now=0.0)
    assert first == [
        "progress: sft     step 8/8  loss 0.125",
        "progress: sft     done",
        "progress: rollout started",
        "progress: grpo    started",
        "progress: grpo    step 2/4  reward 0.412, hedged 25%  ~60 s left",
    ]
    assert watcher.lines(dp.observe(run), now=1.0) == []  # nothing changed
    # A new step within min_gap waits; once the gap has passed it is printed.
    grpo = json.loads((run / "logs" / "grpo" / "metrics.jsonl").read_text().splitlines()[-1])
    step3 = {**grpo, "step": 2, "reward/mean": 0.5, "time": 2060.0}
    _metrics(run, "grpo", [*_grpo_records(run), step3])
    assert watcher.lines(dp.observe(run), now=5.0) == []
    assert watcher.lines(dp.observe(run), now=11.0) == [
        "progress: grpo    step 3/4  reward 0.500, hedged 25%  ~30 s left"
    ]
    # The last step is printed at once, then the end of the stage, with its time.
    step4 = {**grpo, "step": 3, "reward/mean": 0.6, "time": 2090.0}
    _metrics(run, "grpo", [*_grpo_records(run), step4])
    _status(run, "grpo", "done")
    assert watcher.lines(dp.observe(run), now=12.0) == [
        "progress: grpo    step 4/4  reward 0.600, hedged 25%",
        "progress: grpo    done after ~12 s",
    ]


def _grpo_records(run: Path) -> list[dict]:
    path = run / "logs" / "grpo" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_failed_stage_says_so_with_the_first_line_of_its_error(run: Path) -> None:
    watcher = dp.Watcher()
    watcher.lines(dp.observe(run), now=0.0)
    _status(run, "rollout", "failed", error="out of memory\nTraceback ...")
    assert watcher.lines(dp.observe(run), now=3.0) == ["progress: rollout FAILED: out of memory"]


def test_runs_on_a_bare_python_without_the_project_installed(run: Path) -> None:
    """-S -I: no site-packages, no PYTHONPATH, no cwd on the path (the host of `make demo`
    has Docker, not the venv)."""
    out = subprocess.run(
        [sys.executable, "-S", "-I", str(SCRIPT), str(run), "--once"],
        capture_output=True,
        text=True,
        check=True,
        cwd=run,
    )
    assert out.stdout.splitlines()[:2] == [
        "progress: sft     step 8/8  loss 0.125",
        "progress: sft     done",
    ]


def test_a_run_directory_not_there_yet_prints_nothing(tmp_path: Path, capsys) -> None:
    assert dp.main([str(tmp_path / "not-yet"), "--once"]) == 0
    assert capsys.readouterr().out == ""


def test_stops_when_the_watched_process_has_ended(tmp_path: Path) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert dp.main([str(tmp_path), "--interval", "0.01", "--while-pid", ended.stdout]) == 0


# --- the report's first screen: what the demo learned and what a run its size cannot show


def _checkpoint(kind: str, label: str, metrics: dict, half_width: float = 0.2) -> dict:
    return {
        "kind": kind,
        "label": label,
        "number": 2 if kind != "base" else None,
        "metrics": metrics,
        "intervals": {k: [v - half_width, v + half_width] for k, v in metrics.items()},
        "calibration": {},
        "calibration_by_base": {"hardest_proactive_rate": 0.75, "easiest_proactive_rate": 0.125},
    }


def _report(half_width: float, steps: int, low: float) -> dict:
    from proactive_rl.stages.eval.acceptance import acceptance
    from proactive_rl.stages.eval.metrics import curve_summary

    rates = {"accuracy": 0.3, "hallucination_rate": 0.4, "truthfulness": -0.1}
    records = [{"step": s, "reward/mean": 0.31 if s < steps // 2 else 0.46} for s in range(steps)]
    curve = curve_summary(records, window=2)
    curve["reward_change"] = {"change": 0.15, "interval": [low, 0.25], "paired": True}
    report = {
        "questions": 12,
        "n": 2,
        "checkpoints": [
            _checkpoint("base", "base", {**rates, "format_rate": 0.0}, half_width),
            _checkpoint("sft", "sft_epoch_2", {**rates, "format_rate": 0.97}, half_width),
            _checkpoint("policy", "policy_8", {**rates, "format_rate": 0.99}, half_width),
        ],
        "training": {"curve": curve},
    }
    report["acceptance"] = acceptance(report)
    return report


def test_report_first_lines_say_what_was_learned_and_what_a_short_run_cannot_show() -> None:
    from proactive_rl.stages.eval.report import summary

    learned, limits = summary(_report(half_width=0.2, steps=8, low=0.05))
    assert learned == (
        "- **What this run shows:** SFT taught the tag format: 97% well formed (base 0%); GRPO "
        "raised the reward (0.31 -> 0.46, change +0.15 [+0.05, +0.25]); the final policy hedges "
        "on 75% of answers where the base model always fails, 12% where it always succeeds."
    )
    assert limits.startswith(
        "- **What it cannot show:** with 12 questions x 2 samples the final rates are known "
        "to +-20 points, so accuracy kept, hallucination and truthfulness against the base"
    )
    assert "8 GRPO steps show the reward starting to move" in limits


def test_a_trained_checkpoint_cut_at_the_token_limit_is_flagged() -> None:
    """Over 20% of a trained checkpoint's responses cut at max_new_tokens: a third line says its
    rates grade fragments; the base model's paragraphs, cut as often, are not flagged."""
    from proactive_rl.stages.eval.report import summary

    report = _report(half_width=0.2, steps=8, low=0.05)
    assert len(summary(report)) == 2
    report["settings"] = {"eval": {"sampling": {"max_new_tokens": 96}}}
    for c, cut in zip(report["checkpoints"], (0.9, 0.2, 0.47), strict=True):
        c["metrics"]["truncated_rate"] = cut
    lines = summary(report)
    assert lines[2] == (
        "- **Read with care:** policy_8 has 47% of its responses cut at max_new_tokens=96 "
        "(over 20%): its rates grade cut-off answers."
    )


def test_report_md_opens_with_the_two_lines_under_its_title() -> None:
    from proactive_rl.stages.eval.config import EvalConfig
    from proactive_rl.stages.eval.metrics import bucket_table, by_category, calibration, summarize
    from proactive_rl.stages.eval.report import markdown, summary

    report = _report(half_width=0.2, steps=8, low=0.05)
    common = dict(think=True, format_ok=True, malformed=False, truncated=False, category="x")
    rows = [
        dict(question_index=q, grade=g, proactive=p, reward=r, response_tokens=9, **common)
        for q, (g, p, r) in enumerate([("correct", False, 1.0), ("not_attempted", True, 0.6)])
    ]
    for c in report["checkpoints"]:
        c.update(metrics={**summarize(rows), **c["metrics"]}, buckets=bucket_table(rows))
        c.update(calibration=calibration(c["buckets"]), categories=by_category(rows), spec="x")
        c.update(path="run", seconds=1.0)
    report.update(name="report", run_dir="run", split="test", seeds={"eval": 7}, seconds=1.0)
    report["settings"] = {"eval": EvalConfig().model_dump(mode="json")}
    lines = markdown(report, []).splitlines()
    assert lines[0] == "# Evaluation report `report`"
    assert lines[2:4] == summary(report)


def test_report_first_lines_of_a_run_that_did_not_learn_or_was_long_enough() -> None:
    from proactive_rl.stages.eval.report import summary

    learned, limits = summary(_report(half_width=0.03, steps=40, low=-0.02))
    assert "GRPO's reward did not rise beyond its noise" in learned
    assert limits == "- **What it cannot show:** differences inside the 95% intervals below."
