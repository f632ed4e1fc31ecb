"""What hedging alone could reach with the base model's knowledge: the oracle frontier, and
what hedging by the agreement of the checkpoint's own samples reaches: the self-consistency
frontier (stages/eval/frontier.py; eval writes both into report.json).

Usage: .venv/bin/python scripts/learning_frontier.py <eval report folder> [checkpoint label]
[--grader substring|normalised] (the folder of `proactive eval`: its samples.jsonl; the label
defaults to the first checkpoint, the base model in make bench-learning). Prints a summary;
--json writes it to a file too. --gate K: the checkpoint answering only when at least K of its
other samples agree, judged by eval's learning goals (stages/eval/acceptance.py) against the
first checkpoint (the base), each with its 95% interval, as docs/benchmarks.md reads them
(accuracy by the normalised grader, hallucination and truthfulness by the recipe's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proactive_rl.stages.eval.acceptance import Check, learning_goals
from proactive_rl.stages.eval.frontier import (
    HALLUCINATION_MAX,
    gated,
    oracle_frontier,
    self_consistency_frontier,
)
from proactive_rl.stages.eval.metrics import summarize
from proactive_rl.stages.eval.stats import bootstrap_intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an eval report folder (has samples.jsonl)")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint label (default: the first)")
    parser.add_argument("--grader", choices=["normalised", "substring"], default="substring")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--gate", type=int, help="rates of the rule answering at >= K agreeing")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.report / "samples.jsonl").open()]
    label = args.checkpoint or rows[0]["checkpoint"]
    own = [r for r in rows if r["checkpoint"] == label]
    summary = {"checkpoint": label, "grader": args.grader, **oracle_frontier(own)[args.grader]}
    # its goal against the checkpoint's own accuracy, as the oracle's
    summary["consistency"] = self_consistency_frontier(own)[args.grader]
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
    if not c["comparable"]:
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
    """The learning goals of the checkpoint answering only at `min_support` agreeing samples,
    against the first checkpoint (the base), judged by eval's own rules (acceptance.py) with
    the accuracy goal read by the normalised grader and the others by the recipe's."""
    base = [r for r in rows if r["checkpoint"] == rows[0]["checkpoint"]]
    kept = gated(own, min_support)
    goals = {
        key: {c["id"]: c for c in learning_goals(_entry(base, key), _entry(kept, key))}
        for key in ("grade", "grade_normalised")
    }
    return {
        "min_support": min_support,
        "goals": [
            goals["grade_normalised"]["goal_accuracy_kept"],
            goals["grade"]["goal_hallucination"],
            goals["grade"]["goal_truthfulness"],
        ],
    }


def _entry(samples: list[dict], key: str) -> dict:
    """A checkpoint's report entry as eval builds it, graded by `key`."""
    view = [{**s, "grade": s[key]} for s in samples]
    intervals = bootstrap_intervals(view)
    return {"label": view[0]["checkpoint"], "metrics": summarize(view), "intervals": intervals}


def print_gate(g: dict) -> None:
    goals: list[Check] = g["goals"]
    shown = "; ".join(
        f"{c['id']} {'met' if c['passed'] else 'not met'} ({c['detail']})" for c in goals
    )
    print(f"answering only when >= {g['min_support']} others agree: {shown}")


if __name__ == "__main__":
    main()
