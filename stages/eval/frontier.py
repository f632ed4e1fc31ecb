"""What hedging alone could reach with the base model's knowledge: the oracle frontier.

An oracle that knows every question's measured base accuracy answers the questions the model
gets right most often and hedges on the rest. Answering a question q adds acc_q to the correct
rate and inc_q (its share of wrong answers) to the hallucination rate, so the best possible
trade-off is the base questions ranked by acc_q / inc_q. If even this oracle cannot keep
hallucination <= 10% while keeping 80% of the base accuracy, no reward can teach a policy that
does both without also making the model know more (a higher acc_q). The oracle is optimistic:
it selects on the same samples it scores.

The self-consistency frontier is the realisable counterpart: what hedging could reach when the
model decides from what it can see of itself, the agreement of its own n samples (sample i is
given as the answer only when at least k of the other n - 1 gave the same normalised answer,
otherwise it is a hedge). No grade is used to decide, so it is not optimistic; it is the
standard black-box signal of a model's uncertainty (self-consistency). Where it stays far below
the oracle, the model's samples do not tell its right answers from its wrong ones, and a policy
trained on them has that much less to learn from.

eval puts both in report.json under the base checkpoint, with either grader (the goals' accuracy
is the normalised one's); scripts/learning_frontier.py prints them for any report folder.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from proactive_rl.shared.grading import normalise
from proactive_rl.stages.eval.acceptance import ACCURACY_KEPT_MIN, HALLUCINATION_MAX


def per_question(
    samples: Sequence[Mapping[str, Any]], grade_key: str = "grade"
) -> list[tuple[float, float]]:
    """(accuracy, incorrect rate) of every question, over its samples, by `grade_key`."""
    counts: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in samples:
        c = counts[s["question_index"]]
        c[0] += 1
        c[1] += s[grade_key] == "correct"
        c[2] += s[grade_key] == "incorrect"
    return [(right / n, wrong / n) for n, right, wrong in counts.values()]


def frontier(questions: list[tuple[float, float]]) -> dict[str, Any]:
    """The oracle's best correct rate with hallucination <= HALLUCINATION_MAX, its best
    truthfulness, and the base's own rates.

    >>> f = frontier([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (0.0, 1.0)])
    >>> f["base_accuracy"], f["best_accuracy_within_hallucination_max"], f["best_truthfulness"]
    (0.375, 0.25, 0.25)
    """
    total = len(questions)
    # most correct per wrong answer first; a question never wrong costs nothing
    ranked = sorted(questions, key=lambda q: -q[0] / q[1] if q[1] else -float("inf"))
    correct = wrong = 0.0
    best_accuracy = best_truth = 0.0
    for right, bad in ranked:
        if right == 0:
            break
        correct, wrong = correct + right / total, wrong + bad / total
        if wrong <= HALLUCINATION_MAX:
            best_accuracy = correct
        best_truth = max(best_truth, correct - wrong)
    base_accuracy = sum(q[0] for q in questions) / total if total else 0.0
    return {
        "questions": total,
        "base_accuracy": base_accuracy,
        "base_hallucination": sum(q[1] for q in questions) / total if total else 0.0,
        "best_accuracy_within_hallucination_max": best_accuracy,
        "accuracy_goal": ACCURACY_KEPT_MIN * base_accuracy,
        "both_reachable_by_hedging": best_accuracy >= ACCURACY_KEPT_MIN * base_accuracy,
        "best_truthfulness": best_truth,
        "known_questions": sum(q[0] >= 0.5 for q in questions),
        "never_correct_questions": sum(q[0] == 0 for q in questions),
    }


def oracle_frontier(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One checkpoint's frontier under each grader: the recipe's substring rule ("grade") and
    the normalised one, which the accuracy goal reads."""
    return {
        "substring": frontier(per_question(samples, "grade")),
        "normalised": frontier(per_question(samples, "grade_normalised")),
    }


def support(
    samples: Sequence[Mapping[str, Any]], grade_key: str = "grade"
) -> list[tuple[int, str]]:
    """(support, grade) of every sample: how many other samples of its question gave the same
    normalised answer; -1 for a sample that gives none (empty, or a hedge: not attempted).

    >>> rows = [{"question_index": 0, "formal_answer": a, "grade": g}
    ...         for a, g in [("Paris", "correct"), ("paris.", "correct"), ("Lyon", "incorrect"),
    ...                      ("I don't know", "not_attempted")]]
    >>> support(rows)
    [(1, 'correct'), (1, 'correct'), (0, 'incorrect'), (-1, 'not_attempted')]
    """
    keys = [
        normalise(s["formal_answer"]) if s[grade_key] != "not_attempted" else "" for s in samples
    ]
    counts = Counter((s["question_index"], k) for s, k in zip(samples, keys, strict=True) if k)
    return [
        (counts[s["question_index"], k] - 1 if k else -1, s[grade_key])
        for s, k in zip(samples, keys, strict=True)
    ]


def gated(samples: Sequence[Mapping[str, Any]], min_support: int) -> list[dict[str, Any]]:
    """The samples as the self-consistency rule at `min_support` gives them: a sample fewer
    than `min_support` others agree with becomes a hedge (not attempted under both graders), so
    eval's metrics and intervals apply to the rule as to any checkpoint.

    >>> rows = [{"question_index": 0, "formal_answer": a, "grade": g, "grade_normalised": g}
    ...         for a, g in [("Paris", "correct"), ("Paris", "correct"), ("Lyon", "incorrect")]]
    >>> [s["grade"] for s in gated(rows, 1)]
    ['correct', 'correct', 'not_attempted']
    """
    out = []
    for s, (k, _) in zip(samples, support(samples, "grade_normalised"), strict=True):
        s = dict(s)
        if k < min_support:
            s["grade"] = s["grade_normalised"] = "not_attempted"
        out.append(s)
    return out


def consistency_frontier(supported: list[tuple[int, str]], base_accuracy: float) -> dict[str, Any]:
    """Answering only with samples that at least k others agree with, for every k: correct and
    wrong rates per threshold, the most correct at hallucination <= HALLUCINATION_MAX (between
    two thresholds, answering at the lower one at random, which is realisable too), and the best
    truthfulness. `base_accuracy` is what the accuracy goal keeps 80% of.

    >>> rows = [(3, "correct")] * 2 + [(3, "incorrect"), (1, "incorrect"), (0, "correct")] + [
    ...     (0, "incorrect")] * 5
    >>> f = consistency_frontier(rows, base_accuracy=0.3)
    >>> [(p["min_support"], p["accuracy"], p["hallucination"]) for p in f["thresholds"]]
    [(3, 0.2, 0.1), (2, 0.2, 0.1), (1, 0.2, 0.2), (0, 0.3, 0.7)]
    >>> f["best_accuracy_within_hallucination_max"], f["both_reachable_by_hedging"]
    (0.2, False)
    """
    total = len(supported) or 1
    top = max((k for k, _ in supported), default=-1)
    thresholds: list[dict[str, float]] = []
    correct = wrong = 0  # samples answered so far, counted (exact rates at every threshold)
    best_accuracy = best_truth = 0.0
    allowed = HALLUCINATION_MAX * total
    for k in range(top, -1, -1):
        level = [g for s, g in supported if s == k]
        right, bad = level.count("correct"), level.count("incorrect")
        if wrong + bad <= allowed:
            best_accuracy = (correct + right) / total
        elif wrong <= allowed:
            # answer a random share of this level's samples, up to the hallucination bound
            best_accuracy = max(best_accuracy, (correct + right * (allowed - wrong) / bad) / total)
        correct, wrong = correct + right, wrong + bad
        best_truth = max(best_truth, (correct - wrong) / total)
        thresholds.append(
            {"min_support": k, "accuracy": correct / total, "hallucination": wrong / total}
        )
    return {
        "samples": len(supported),
        "thresholds": thresholds,
        "best_accuracy_within_hallucination_max": best_accuracy,
        "accuracy_goal": ACCURACY_KEPT_MIN * base_accuracy,
        "both_reachable_by_hedging": best_accuracy >= ACCURACY_KEPT_MIN * base_accuracy,
        "best_truthfulness": best_truth,
    }


# Agreement is exact (normalised) agreement of whole answers: it means something for the short
# answers of the response format, not for a base model's free-form paragraphs, which almost
# never repeat word for word whatever the model knows. Above this median length the frontier is
# computed but marked not comparable, and the reports show a dash.
SHORT_ANSWER_WORDS = 10


def median_answer_words(samples: Sequence[Mapping[str, Any]], grade_key: str = "grade") -> float:
    """Median length in words of the attempted answers (0 when none is).

    >>> rows = [{"formal_answer": a, "grade": "incorrect"} for a in ["Paris", "x y z"]]
    >>> median_answer_words(rows)
    2.0
    """
    lengths = sorted(
        len(normalise(s["formal_answer"]).split())
        for s in samples
        if s[grade_key] != "not_attempted"
    )
    if not lengths:
        return 0.0
    mid = len(lengths) // 2
    return float(lengths[mid]) if len(lengths) % 2 else (lengths[mid - 1] + lengths[mid]) / 2


def self_consistency_frontier(
    samples: Sequence[Mapping[str, Any]], base_accuracy: Mapping[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """One checkpoint's self-consistency frontier under each grader. `base_accuracy` (per
    grader) sets the accuracy goal; by default the checkpoint's own accuracy (the base model's
    entry). `comparable` is False for free-form answers (SHORT_ANSWER_WORDS)."""
    out = {}
    for grader, key in (("substring", "grade"), ("normalised", "grade_normalised")):
        supported = support(samples, key)
        own = sum(g == "correct" for _, g in supported) / len(supported) if supported else 0.0
        view = consistency_frontier(supported, base_accuracy[grader] if base_accuracy else own)
        view["median_answer_words"] = median_answer_words(samples, key)
        view["comparable"] = view["median_answer_words"] <= SHORT_ANSWER_WORDS
        out[grader] = view
    return out
