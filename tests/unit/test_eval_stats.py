"""Bootstrap intervals and the risk-coverage curve on synthetic grades with known answers."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from proactive_rl.stages.eval import stats
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.main import graded_views
from proactive_rl.stages.eval.metrics import bucket_table, by_category, calibration, summarize
from proactive_rl.stages.eval.report import markdown
from proactive_rl.stages.eval.stats import bootstrap_intervals, risk_coverage


def sample(q: int, grade: str, proactive: bool = False, normalised: str | None = None) -> dict:
    return {
        "question_index": q,
        "grade": grade,
        "grade_normalised": normalised or grade,
        "proactive": proactive,
        "think": True,
        "format_ok": True,
        "malformed": False,
        "truncated": False,
        "reward": float(grade == "correct"),
        "response_tokens": 5,
        "category": "",
    }


def test_doctests() -> None:
    result = doctest.testmod(stats, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_95_percent_interval_covers_the_true_rate_about_95_times_in_100() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(100):
        rows = [sample(q, "correct" if rng.random() < 0.3 else "incorrect") for q in range(200)]
        low, high = bootstrap_intervals(rows, resamples=500, seed=trial)["accuracy"]
        covered += low <= 0.3 <= high
    assert 88 <= covered <= 100


def test_samples_of_one_question_are_not_independent() -> None:
    """200 questions x 4 identical samples carry the information of 200 draws, not 800: the
    interval is as wide as for 200 single samples, twice as wide as for 800."""
    rng = np.random.default_rng(2)
    grades = ["correct" if rng.random() < 0.3 else "incorrect" for _ in range(800)]

    def width(rows: list[dict]) -> float:
        low, high = bootstrap_intervals(rows, seed=0)["accuracy"]
        return high - low

    repeated = width([sample(q, g) for q, g in enumerate(grades[:200]) for _ in range(4)])
    single = width([sample(q, g) for q, g in enumerate(grades[:200])])
    many = width([sample(q, g) for q, g in enumerate(grades)])
    assert repeated == pytest.approx(single, rel=0.15)
    assert repeated == pytest.approx(2 * many, rel=0.25)


def test_truthfulness_interval_brackets_correct_minus_incorrect() -> None:
    grades = ["correct"] * 50 + ["incorrect"] * 30 + ["not_attempted"] * 20
    rows = [sample(q, g) for q, g in enumerate(grades)]
    low, high = bootstrap_intervals(rows)["truthfulness"]
    assert summarize(rows)["truthfulness"] == pytest.approx(0.2)
    assert low < 0.2 < high


def test_risk_coverage_of_a_model_that_knows_what_it_knows() -> None:
    # 10 questions always right, 10 always wrong: answering the top half is perfect
    rows = [sample(q, "correct") for q in range(10) for _ in range(2)]
    rows += [sample(q, "incorrect") for q in range(10, 20) for _ in range(2)]
    rc = risk_coverage(rows)
    assert rc["coverage"] == [0.5, 1.0] and rc["accuracy"] == [1.0, 0.5]
    # mean accuracy over coverages 1/20..20/20: 10 at 1.0, then 10/k for k = 11..20
    assert rc["area"] == pytest.approx((10 + sum(10 / k for k in range(11, 21))) / 20)
    assert rc["operating_point"] == {"coverage": 1.0, "accuracy": 0.5}
    # questions of equal difficulty: the curve is flat at the overall accuracy
    flat = risk_coverage([sample(q, g) for q in range(5) for g in ("correct", "incorrect")])
    assert flat["coverage"] == [1.0] and flat["area"] == pytest.approx(0.5)


def test_report_shows_intervals_both_graders_and_selective_answering() -> None:
    rows = [sample(q, "correct", normalised="incorrect") for q in range(3)]
    rows += [sample(q, "not_attempted", True) for q in range(3, 6)]
    entry = {
        "label": "policy_3",
        "spec": "final",
        "kind": "policy",
        "number": 3,
        "path": "run/policies/step_000003",
        "seconds": 1.0,
        "metrics": summarize(rows),
        "buckets": bucket_table(rows),
        "calibration": calibration(bucket_table(rows)),
        "categories": by_category(rows),
        **graded_views(rows, resamples=200, seed=0),
    }
    assert entry["metrics"]["accuracy"] == 0.5
    assert entry["metrics_normalised"]["accuracy"] == 0.0
    report = {
        "name": "report",
        "run_dir": "run",
        "split": "test",
        "questions": 6,
        "n": 1,
        "seeds": {"eval": 7},
        "seconds": 3.0,
        "settings": {"eval": EvalConfig().model_dump(mode="json")},
        "checkpoints": [entry],
        "training": {"curve": None},
        "acceptance": [],
    }
    text = markdown(report, [])
    low, high = entry["intervals"]["accuracy"]
    assert f"50.0% [{100 * low:.1f}, {100 * high:.1f}]" in text
    assert "accuracy (normalised) | 0.0%" in text
    assert "truthfulness (correct - incorrect)" in text
    assert "## Selective answering" in text


def test_change_interval_paired_and_unpaired() -> None:
    """The same prompts in both windows: a paired bootstrap, narrow when every prompt moved by
    the same amount; different prompts: each window resampled on its own, wider."""
    first = {p: float(p % 5) / 5 for p in range(50)}
    last = {p: v + 0.05 for p, v in first.items()}
    paired = stats.change_interval(first, last)
    assert paired["paired"] and paired["change"] == pytest.approx(0.05)
    assert paired["interval"][1] - paired["interval"][0] < 1e-9
    moved = {p + 100: v for p, v in last.items()}
    unpaired = stats.change_interval(first, moved)
    assert not unpaired["paired"] and unpaired["change"] == pytest.approx(0.05)
    assert unpaired["interval"][0] < 0 < unpaired["interval"][1]  # prompts differ by up to 0.8
