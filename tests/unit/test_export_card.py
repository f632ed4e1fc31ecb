"""The model card repeats eval's headline rows and cell format (a stage does not import another
stage): this keeps the copy equal to eval's, so a card and its run's report.md never disagree."""

from __future__ import annotations

import pytest

from proactive_rl.stages.eval import report as eval_report
from proactive_rl.stages.export import card


def test_card_rows_are_eval_rows_with_the_same_titles_and_formats():
    eval_rows = {key: (title, kind) for key, title, kind in eval_report.METRIC_ROWS}
    for key, title, kind in card.METRIC_ROWS:
        assert eval_rows.get(key) == (title, kind), key


@pytest.mark.parametrize("key", [key for key, _, _ in card.METRIC_ROWS])
def test_card_cells_read_as_the_reports(key):
    kind = dict((k, kd) for k, _, kd in card.METRIC_ROWS)[key]
    with_interval = {"metrics": {key: 0.25}, "intervals": {key: [0.182, 0.319]}}
    without = {"metrics": {key: -0.5}}
    for checkpoint in (with_interval, without):
        assert card.cell(checkpoint, key, kind) == eval_report._cell(checkpoint, key, kind)
