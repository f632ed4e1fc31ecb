"""The model card and eval's report.md show a report's metric table alike (both format through
stages/reports.py): the same rows, the same cells with intervals, the exported model's column
marked on the card."""

from __future__ import annotations

from proactive_rl.stages.eval import report as eval_report
from proactive_rl.stages.export import card
from proactive_rl.stages.reports import METRIC_ROWS


def _checkpoint(label: str, scale: float) -> dict:
    metrics = {key: scale * (i + 1) / 20 for i, (key, _, _) in enumerate(METRIC_ROWS)}
    intervals = {key: [v * 0.9, v * 1.1] for key, v in list(metrics.items())[:6]}  # some only
    return {"label": label, "metrics": metrics, "intervals": intervals}


def _rows(lines: list[str]) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell: the other cells."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if "|" in line]
    return {c[0]: c[1:] for c in cells if c and not c[0].startswith("---")}


def test_card_table_equals_report_md_table():
    checkpoints = [_checkpoint("base", 0.5), _checkpoint("policy_3", 1.0)]
    report = {"split": "test", "questions": 4, "n": 2, "checkpoints": checkpoints, "settings": {}}
    on_card = _rows(card.report_table("report", report, "policy_3"))
    in_report = _rows(eval_report.metrics_section(checkpoints, ["base", "policy_3"], 2))
    for _, title, _ in METRIC_ROWS:
        assert on_card[title] == in_report[title], title
    assert on_card[METRIC_ROWS[0][1]][1].startswith("5.0% [4.5, 5.5]")
    header = next(
        line for line in card.report_table("report", report, "policy_3") if "metric" in line
    )
    assert "**policy_3 (this model)**" in header
