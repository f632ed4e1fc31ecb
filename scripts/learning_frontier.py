"""What hedging alone could reach with the base model's knowledge: the oracle frontier, and
what hedging by the agreement of the checkpoint's own samples reaches: the self-consistency
frontier (stages/eval/frontier.py; eval writes both into report.json).

Usage: .venv/bin/python scripts/learning_frontier.py <eval report folder> [checkpoint label]
[--grader substring|normalised] (the folder of `proactive eval`: its samples.jsonl; the label
defaults to the first checkpoint, the base model in make bench-learning). Prints a summary;
--json writes it to a file too. --gate K: the checkpoint answering only when at least K of its
other samples agree, its rates with 95% intervals and the learning goals against the first
checkpoint (the base), as the goals are read in docs/benchmarks.md (accuracy by the normalised
grader, hallucination and truthfulness by the recipe's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proactive_rl.stages.eval.acceptance import ACCURACY_KEPT_MIN
from proactive_rl.stages.eval.frontier import (
    HALLUCINATION_MAX,
    SHORT_ANSWER_WORDS,
    consistency_frontier,
    frontier,
    gated,
    median_answer_words,
    per_question,
    support,
)
from proactive_rl.stages.eval.stats import bootstrap_intervals

GRADE_KEYS = {"substring": "grade", "normalised": "grade_normalised"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an eval report folder (has samples.jsonl)")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint label (default: the first)")
    parser.add_argument("--grader", choices=sorted(GRADE_KEYS), default="substring")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--gate", type=int, help="rates of the rule answering at >= K agreeing")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.report / "samples.jsonl").open()]
    label = args.checkpoint or rows[0]["checkpoint"]
    own = [r for r in rows if r["checkpoint"] == label]
    key = GRADE_KEYS[args.grader]
    summary = {"checkpoint": label, "grader": args.grader, **frontier(per_question(own, key))}
    summary["consistency"] = consistency_frontier(support(own, key), summary["base_accuracy"])
    summary["consistency"]["median_answer_words"] = median_answer_words(own, key)
    if args.gate is not None:
        summary["gate"] = gate_summary(rows, own, args.gate)
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
    if "gate" in s:
        print_gate(s["gate"])


def gate_summary(rows: list[dict], own: list[dict], min_support: int) -> dict:
    """The gated checkpoint's rates with intervals, and the goals against the first (base)."""
    base = [r for r in rows if r["checkpoint"] == rows[0]["checkpoint"]]
    kept = gated(own, min_support)
    sub, norm = bootstrap_intervals(kept, "grade"), bootstrap_intervals(kept, "grade_normalised")
    rate = {
        "accuracy_normalised": _rate(kept, "grade_normalised", "correct"),
        "hallucination": _rate(kept, "grade", "incorrect"),
    }
    rate["truthfulness"] = _rate(kept, "grade", "correct") - rate["hallucination"]
    goal = ACCURACY_KEPT_MIN * _rate(base, "grade_normalised", "correct")
    return {
        "min_support": min_support,
        **rate,
        "intervals": {
            "accuracy_normalised": norm["accuracy"],
            "hallucination": sub["hallucination_rate"],
            "truthfulness": sub["truthfulness"],
        },
        "accuracy_goal": goal,
        "goals_met": {
            "hallucination": rate["hallucination"] <= HALLUCINATION_MAX,
            "accuracy_kept": rate["accuracy_normalised"] >= goal,
            "truthfulness": rate["truthfulness"] >= 0,
        },
    }


def _rate(samples: list[dict], key: str, grade: str) -> float:
    return sum(s[key] == grade for s in samples) / len(samples)


def print_gate(g: dict) -> None:
    iv = g["intervals"]

    def show(name: str, signed: bool = False) -> str:
        low, high = iv[name]
        f = "{:+.1%}" if signed else "{:.1%}"
        return f"{f.format(g[name])} [{f.format(low)}, {f.format(high)}]"

    met = ", ".join(f"{k} {'met' if v else 'not met'}" for k, v in g["goals_met"].items())
    print(
        f"answering only when >= {g['min_support']} others agree: accuracy (normalised) "
        f"{show('accuracy_normalised')} (goal {g['accuracy_goal']:.1%}), hallucination "
        f"{show('hallucination')}, truthfulness {show('truthfulness', True)}; goals: {met}"
    )


if __name__ == "__main__":
    main()
