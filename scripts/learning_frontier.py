"""What hedging alone could reach with the base model's knowledge: the oracle frontier, and
what hedging by the agreement of the checkpoint's own samples reaches: the self-consistency
frontier (stages/eval/frontier.py; eval writes both into report.json).

Usage: .venv/bin/python scripts/learning_frontier.py <eval report folder> [checkpoint label]
[--grader substring|normalised] (the folder of `proactive eval`: its samples.jsonl; the label
defaults to the first checkpoint, the base model in make bench-learning). Prints a summary;
--json writes it to a file too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proactive_rl.stages.eval.frontier import (
    HALLUCINATION_MAX,
    SHORT_ANSWER_WORDS,
    consistency_frontier,
    frontier,
    median_answer_words,
    per_question,
    support,
)

GRADE_KEYS = {"substring": "grade", "normalised": "grade_normalised"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an eval report folder (has samples.jsonl)")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint label (default: the first)")
    parser.add_argument("--grader", choices=sorted(GRADE_KEYS), default="substring")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.report / "samples.jsonl").open()]
    label = args.checkpoint or rows[0]["checkpoint"]
    own = [r for r in rows if r["checkpoint"] == label]
    key = GRADE_KEYS[args.grader]
    summary = {"checkpoint": label, "grader": args.grader, **frontier(per_question(own, key))}
    summary["consistency"] = consistency_frontier(support(own, key), summary["base_accuracy"])
    summary["consistency"]["median_answer_words"] = median_answer_words(own, key)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    s = summary
    print(
        f"oracle frontier of {label} on {s['questions']} questions ({args.grader} grader): base "
        f"accuracy {s['base_accuracy']:.1%}, hallucination {s['base_hallucination']:.1%}; "
        f"answering only its best questions, at most "
        f"{s['best_accuracy_within_hallucination_max']:.1%} correct with hallucination <= "
        f"{HALLUCINATION_MAX:.0%} (goal: {s['accuracy_goal']:.1%}); best truthfulness "
        f"{s['best_truthfulness']:+.1%}"
    )
    c = s["consistency"]
    if c["median_answer_words"] > SHORT_ANSWER_WORDS:
        print(
            f"self-consistency frontier: not comparable, free-form answers (median "
            f"{c['median_answer_words']:.0f} words; whole answers must agree)"
        )
        return
    steps = ", ".join(
        f">= {t['min_support']}: {t['accuracy']:.1%} / {t['hallucination']:.1%}"
        for t in c["thresholds"]
    )
    print(
        f"self-consistency frontier (answer only when >= k of its other samples agree): at most "
        f"{c['best_accuracy_within_hallucination_max']:.1%} correct with hallucination <= "
        f"{HALLUCINATION_MAX:.0%}; best truthfulness {c['best_truthfulness']:+.1%}; correct / "
        f"wrong per k: {steps}"
    )


if __name__ == "__main__":
    main()
