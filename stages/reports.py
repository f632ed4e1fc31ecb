"""How eval's report.json reads to a person, for every stage that shows it: the headline rows of
its metric x checkpoint table, a rate with its interval (`25.0% [18.2, 31.9]`), markdown tables,
and the names checkpoints go by. Eval's report.md, the exported model's card and the sweep's
comparison all format through here, so they never disagree.

Not a stage: a layer below the stages (tests/unit/test_layers.py), like stages/common.py.
"""

from __future__ import annotations

from typing import Any

# (key in a checkpoint's metrics, row title, format) for the main table of report.md and the card
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "accuracy (correct / all)", "pct"),
    ("accuracy_given_attempted", "accuracy given attempted", "pct"),
    ("f_score", "F-score", "num"),
    ("hallucination_rate", "hallucination rate (incorrect / all)", "pct"),
    ("not_attempted_rate", "not attempted", "pct"),
    ("truthfulness", "truthfulness (correct - incorrect)", "pct"),
    ("proactive_rate", "proactive block", "pct"),
    ("format_rate", "tag format ok (think + plain answer)", "pct"),
    ("think_rate", "think block", "pct"),
    ("malformed_rate", "malformed tags", "pct"),
    ("truncated_rate", "truncated (max_new_tokens)", "pct"),
    ("mean_reward", "mean reward", "num"),
    ("mean_response_tokens", "mean response tokens", "int"),
)


def fmt(value: Any, kind: str = "num") -> str:
    """A number as a table shows it: pct (25.0%), int (96) or num (0.125); None is '–'.

    >>> fmt(0.25, "pct"), fmt(95.6, "int"), fmt(0.125), fmt(None)
    ('25.0%', '96', '0.125', '–')
    """
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.3f}"


def cell(checkpoint: dict[str, Any], key: str, kind: str, view: str = "") -> str:
    """A checkpoint's metric with its 95% interval where the report has one. `view` picks the
    grader's view: "" (substring) or "_normalised".

    >>> cell({"metrics": {"accuracy": 0.25}, "intervals": {"accuracy": [0.182, 0.319]}},
    ...      "accuracy", "pct")
    '25.0% [18.2, 31.9]'
    >>> cell({"metrics": {}}, "accuracy", "pct")
    '–'
    """
    value = checkpoint.get(f"metrics{view}", {}).get(key)
    interval = checkpoint.get(f"intervals{view}", {}).get(key)
    if value is None or interval is None:
        return fmt(value, kind)
    low, high = (fmt(v, kind).rstrip("%") for v in interval)
    return f"{fmt(value, kind)} [{low}, {high}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def policy_label(version: int) -> str:
    """The name a GRPO policy goes by in reports and exports: policy_3."""
    return f"policy_{version}"


def sft_label(epoch: int) -> str:
    """The name an SFT epoch goes by in reports and exports: sft_epoch_1."""
    return f"sft_epoch_{epoch}"
