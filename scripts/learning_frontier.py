"""What hedging alone could reach with the base model's knowledge: the oracle frontier.

An oracle that knows every question's measured base accuracy answers the questions the model
gets right most often and hedges on the rest. Answering a question q adds acc_q to the correct
rate and inc_q (its share of wrong answers) to the hallucination rate, so the best possible
trade-off is the base questions ranked by acc_q / inc_q. If even this oracle cannot keep
hallucination <= 10% while keeping 80% of the base accuracy, no reward can teach a policy that
does both without also making the model know more (a higher acc_q).

Usage: python scripts/learning_frontier.py <eval report folder> [checkpoint label]
(the folder of `proactive eval`: its samples.jsonl; the label defaults to the first checkpoint,
the base model in make bench-learning). Prints a summary; --json writes it to a file too.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

HALLUCINATION_MAX = 0.10
ACCURACY_KEPT_MIN = 0.80


def per_question(samples: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(accuracy, incorrect rate) of every question, over its samples."""
    counts: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in samples:
        c = counts[s["question_index"]]
        c[0] += 1
        c[1] += s["grade"] == "correct"
        c[2] += s["grade"] == "incorrect"
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
    base_accuracy = sum(q[0] for q in questions) / total
    return {
        "questions": total,
        "base_accuracy": base_accuracy,
        "base_hallucination": sum(q[1] for q in questions) / total,
        "best_accuracy_within_hallucination_max": best_accuracy,
        "accuracy_goal": ACCURACY_KEPT_MIN * base_accuracy,
        "both_reachable_by_hedging": best_accuracy >= ACCURACY_KEPT_MIN * base_accuracy,
        "best_truthfulness": best_truth,
        "known_questions": sum(q[0] >= 0.5 for q in questions),
        "never_correct_questions": sum(q[0] == 0 for q in questions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an eval report folder (has samples.jsonl)")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint label (default: the first)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.report / "samples.jsonl").open()]
    label = args.checkpoint or rows[0]["checkpoint"]
    summary = {
        "checkpoint": label,
        **frontier(per_question([r for r in rows if r["checkpoint"] == label])),
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    s = summary
    print(
        f"oracle frontier of {label} on {s['questions']} questions: base accuracy "
        f"{s['base_accuracy']:.1%}, hallucination {s['base_hallucination']:.1%}; answering only "
        f"its best questions, at most {s['best_accuracy_within_hallucination_max']:.1%} correct "
        f"with hallucination <= {HALLUCINATION_MAX:.0%} (goal: {s['accuracy_goal']:.1%}); best "
        f"truthfulness {s['best_truthfulness']:+.1%}"
    )


if __name__ == "__main__":
    main()
