"""What hedging alone could reach with the base model's knowledge: the oracle frontier.

An oracle that knows every question's measured base accuracy answers the questions the model
gets right most often and hedges on the rest. Answering a question q adds acc_q to the correct
rate and inc_q (its share of wrong answers) to the hallucination rate, so the best possible
trade-off is the base questions ranked by acc_q / inc_q. If even this oracle cannot keep
hallucination <= 10% while keeping 80% of the base accuracy, no reward can teach a policy that
does both without also making the model know more (a higher acc_q). The oracle is optimistic:
it selects on the same samples it scores.

eval puts it in report.json under the base checkpoint, with either grader (the goals' accuracy
is the normalised one's); scripts/learning_frontier.py prints it for any report folder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

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
