"""report.md's two frontier sections (stages/eval/frontier.py computes them): what hedging
alone could reach with the base model's knowledge (the oracle), and what hedging by the
agreement of each checkpoint's own samples reaches (self-consistency)."""

from __future__ import annotations

from typing import Any

from proactive_rl.stages.eval.acceptance import ACCURACY_KEPT_MIN, HALLUCINATION_MAX
from proactive_rl.stages.reports import fmt, table


def frontier_section(cks: list[dict[str, Any]]) -> list[str]:
    """What hedging alone could reach with the base model's knowledge (stages/eval/frontier.py),
    under each grader: the bound on any reward that does not make the model know more."""
    base = next((c for c in cks if c.get("oracle_frontier")), None)
    if base is None:
        return []
    rows = [[grader, *frontier_cells(view)] for grader, view in base["oracle_frontier"].items()]
    return [
        "",
        "## What hedging alone could reach (oracle frontier of the base model)",
        "",
        f"An oracle that knows each question's accuracy under `{base['label']}` answers only the "
        "questions it gets right most often and hedges on the rest (optimistic: it selects on "
        f"the samples it scores). If it cannot keep hallucination at most {HALLUCINATION_MAX:.0%} "
        f"with {ACCURACY_KEPT_MIN:.0%} of the base's accuracy, no reward can without the model "
        "knowing more.",
        "",
        *table(FRONTIER_HEADER, rows),
    ]


def consistency_section(cks: list[dict[str, Any]]) -> list[str]:
    """Every checkpoint's self-consistency frontier (stages/eval/frontier.py) under the goals'
    grader: what hedging by the agreement of its own samples could reach."""
    rows = []
    for c in cks:
        view = c.get("consistency_frontier", {}).get("normalised")
        if view is None:
            continue
        steps = "; ".join(
            f">= {t['min_support']}: {fmt(t['accuracy'], 'pct')} / {fmt(t['hallucination'], 'pct')}"
            for t in view["thresholds"]
        )
        if not view["comparable"]:
            free = f"– (free-form answers, median {view['median_answer_words']:.0f} words)"
            rows.append([c["label"], free, "–", "–", "–", "–"])
            continue
        rows.append(
            [
                c["label"],
                fmt(view["best_accuracy_within_hallucination_max"], "pct"),
                fmt(view["accuracy_goal"], "pct"),
                "yes" if view["both_reachable_by_hedging"] else "no",
                f"{100 * view['best_truthfulness']:+.1f}%",
                steps or "–",
            ]
        )
    if not rows:
        return []
    return [
        "",
        "## What the model's own agreement could reach (self-consistency frontier)",
        "",
        "Each sample is given as the answer only when at least k of the question's other "
        "samples gave the same normalised answer, otherwise it counts as a hedge: a rule the "
        "model could follow with no grade and no oracle. Normalised grader; the accuracy goal is "
        f"{ACCURACY_KEPT_MIN:.0%} of the base's; the last column is correct / wrong per k. Whole "
        "answers must agree, so free-form paragraphs (a base model's) are not compared.",
        "",
        *table(CONSISTENCY_HEADER, rows),
    ]


CONSISTENCY_HEADER = [
    "checkpoint",
    f"most correct at <= {HALLUCINATION_MAX:.0%} hallucination",
    f"{ACCURACY_KEPT_MIN:.0%} of base (goal)",
    "both goals",
    "best truthfulness",
    "answer when >= k others agree: correct / wrong",
]


FRONTIER_HEADER = [
    "grader",
    "base accuracy",
    f"most correct at <= {HALLUCINATION_MAX:.0%} hallucination",
    f"{ACCURACY_KEPT_MIN:.0%} of base (goal)",
    "both goals by hedging",
    "best truthfulness",
]


def frontier_cells(view: dict[str, Any]) -> list[str]:
    """One grader's frontier as FRONTIER_HEADER's cells (after the grader)."""
    return [
        fmt(view["base_accuracy"], "pct"),
        fmt(view["best_accuracy_within_hallucination_max"], "pct"),
        fmt(view["accuracy_goal"], "pct"),
        "yes" if view["both_reachable_by_hedging"] else "no",
        f"{100 * view['best_truthfulness']:+.1f}%",
    ]
