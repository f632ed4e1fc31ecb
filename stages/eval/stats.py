"""Uncertainty and selective answering for the evaluation report (pure, numpy only).

- Bootstrap 95% intervals on every rate. The n samples of one question are not independent
  (one model, one question), so the bootstrap resamples questions, each with all its samples:
  an interval over 200 questions x n=4 is about as wide as 200 independent draws, not 800.
- The risk-coverage curve: how accurate the model would be if it answered only the questions it
  is best at, judged by its own group accuracy (the signal the proactive reward trains on):
  questions ranked by that accuracy, coverage = fraction answered, accuracy = mean accuracy of
  those answered. Beside it, the operating point the model actually chose: the fraction of
  responses it attempted and its accuracy on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Rates with an interval, and the per-question counts each is a ratio of.
INTERVAL_KEYS: tuple[str, ...] = (
    "accuracy",
    "hallucination_rate",
    "not_attempted_rate",
    "accuracy_given_attempted",
    "f_score",
    "truthfulness",
    "proactive_rate",
    "format_rate",
    "mean_reward",
)


def _per_question(samples: Sequence[Mapping[str, Any]], grade_key: str) -> dict[str, np.ndarray]:
    index: dict[Any, int] = {}
    for s in samples:
        index.setdefault(s["question_index"], len(index))
    counts = {
        k: np.zeros(len(index))
        for k in ("n", "correct", "incorrect", "attempted", "proactive", "format", "reward")
    }
    for s in samples:
        q = index[s["question_index"]]
        grade = s[grade_key]
        counts["n"][q] += 1
        counts["correct"][q] += grade == "correct"
        counts["incorrect"][q] += grade == "incorrect"
        counts["attempted"][q] += grade != "not_attempted"
        counts["proactive"][q] += bool(s["proactive"])
        counts["format"][q] += bool(s["format_ok"])
        counts["reward"][q] += float(s["reward"])
    return counts


def _rates(totals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every INTERVAL_KEYS rate from (weighted) totals; arrays broadcast over resamples."""
    n = totals["n"]
    accuracy = totals["correct"] / n
    attempted = totals["attempted"]
    given = np.divide(
        totals["correct"], attempted, out=np.zeros_like(accuracy), where=attempted > 0
    )
    both = accuracy + given
    f_score = np.divide(2 * accuracy * given, both, out=np.zeros_like(both), where=both > 0)
    hallucination = totals["incorrect"] / n
    return {
        "accuracy": accuracy,
        "hallucination_rate": hallucination,
        "not_attempted_rate": 1 - attempted / n,
        "accuracy_given_attempted": given,
        "f_score": f_score,
        "truthfulness": accuracy - hallucination,
        "proactive_rate": totals["proactive"] / n,
        "format_rate": totals["format"] / n,
        "mean_reward": totals["reward"] / n,
    }


def bootstrap_intervals(
    samples: Sequence[Mapping[str, Any]],
    grade_key: str = "grade",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """[low, high] percentile interval of each INTERVAL_KEYS rate, resampling questions.

    >>> rows = [{"question_index": q, "grade": g, "proactive": False, "format_ok": True,
    ...          "reward": 1.0 if g == "correct" else 0.0}
    ...         for q in range(100) for g in (["correct"] if q < 30 else ["incorrect"])]
    >>> low, high = bootstrap_intervals(rows)["accuracy"]
    >>> 0.2 < low < 0.3 < high < 0.4
    True
    """
    counts = _per_question(samples, grade_key)
    questions = len(counts["n"])
    rng = np.random.default_rng(seed)
    # weights[b, q]: how often question q is drawn in resample b
    weights = rng.multinomial(questions, np.full(questions, 1.0 / questions), size=resamples)
    rates = _rates({k: weights @ v for k, v in counts.items()})
    tail = 100 * (1 - level) / 2
    return {
        key: [float(np.percentile(rates[key], tail)), float(np.percentile(rates[key], 100 - tail))]
        for key in INTERVAL_KEYS
    }


def risk_coverage(samples: Sequence[Mapping[str, Any]], grade_key: str = "grade") -> dict[str, Any]:
    """The curve (one point per distinct group accuracy, most confident first), its area and
    the model's own operating point.

    `area` is the mean accuracy over the coverages 1/Q .. Q/Q (higher is better; it equals the
    overall accuracy when every question is as hard as every other).

    >>> rows = [{"question_index": q, "grade": g}
    ...         for q, gs in enumerate([["correct"] * 2, ["correct", "incorrect"],
    ...                                 ["not_attempted", "incorrect"]]) for g in gs]
    >>> rc = risk_coverage(rows)
    >>> rc["coverage"], rc["accuracy"]
    ([0.3333333333333333, 0.6666666666666666, 1.0], [1.0, 0.75, 0.5])
    >>> rc["operating_point"]
    {'coverage': 0.8333333333333334, 'accuracy': 0.6}
    """
    counts = _per_question(
        [{**s, "proactive": False, "format_ok": False, "reward": 0.0} for s in samples], grade_key
    )
    group_acc = counts["correct"] / counts["n"]
    order = np.argsort(-group_acc, kind="stable")
    ranked = group_acc[order]
    cumulative = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    # ties answer together: keep the last point of each run of equal accuracies
    last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
    points = np.flatnonzero(last_of_tie)
    attempted = counts["attempted"].sum() / counts["n"].sum()
    correct = counts["correct"].sum()
    return {
        "coverage": [float((i + 1) / len(ranked)) for i in points],
        "accuracy": [float(cumulative[i]) for i in points],
        "threshold": [float(ranked[i]) for i in points],
        "area": float(cumulative.mean()),
        "operating_point": {
            "coverage": float(attempted),
            "accuracy": float(correct / counts["attempted"].sum()) if attempted else 0.0,
        },
    }


def change_interval(
    first: Mapping[Any, float],
    last: Mapping[Any, float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The change of a per-group mean (e.g. the GRPO reward) from the first training window to
    the last, with a percentile bootstrap interval that resamples prompts (groups).

    `first` and `last` map a prompt to its mean reward in that window. When both windows scored
    the same prompts (a pool cycled over epochs) the bootstrap is paired: one draw of prompts
    serves both windows, so what a prompt is worth cancels and only learning remains. Otherwise
    each window is resampled on its own.

    >>> first = {p: 0.2 + 0.01 * (p % 3) for p in range(40)}
    >>> last = {p: v + 0.1 for p, v in first.items()}
    >>> c = change_interval(first, last)
    >>> c["paired"], round(c["change"], 3), c["interval"][0] > 0
    (True, 0.1, True)
    """
    rng = np.random.default_rng(seed)
    paired = set(first) == set(last)
    if paired:
        keys = sorted(first, key=str)
        diff = np.array([last[k] - first[k] for k in keys])
        weights = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=resamples)
        draws = weights @ diff / len(keys)
        change = float(diff.mean())
    else:
        a, b = np.array(list(first.values())), np.array(list(last.values()))
        wa = rng.multinomial(len(a), np.full(len(a), 1 / len(a)), size=resamples)
        wb = rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=resamples)
        draws = wb @ b / len(b) - wa @ a / len(a)
        change = float(b.mean() - a.mean())
    tail = 100 * (1 - level) / 2
    interval = [float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))]
    return {"change": change, "interval": interval, "paired": paired, "prompts": len(first)}
