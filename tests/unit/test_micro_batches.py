"""How the GRPO trainer cuts a process's rows into micro-batches: by row count, or by a token
budget (veRL's use_dynamic_bsz), and how many passes every process then runs."""

from __future__ import annotations

import pytest

from proactive_rl.engine.parallel import Parallel, split_micro


def rows_of(*tokens: tuple[int, int], group: int = 0) -> list[dict]:
    """Rows with (prompt, response) token counts."""
    return [{"prompt_ids": [1] * p, "response_ids": [2] * r, "group_id": group} for p, r in tokens]


@pytest.mark.parametrize(
    ("tokens", "size", "budget", "expected"),
    [
        ([], 4, None, []),
        ([], 4, 10, []),
        ([(2, 3)] * 5, 2, None, [[0, 1], [2, 3], [4]]),
        ([(2, 3)] * 3, 8, None, [[0, 1, 2]]),
        # the budget counts prompt + response: 5 + 5 fit in 10, a third does not
        ([(2, 3)] * 5, 1, 10, [[0, 1], [2, 3], [4]]),
        # one token short of fitting two rows
        ([(2, 3)] * 3, 8, 9, [[0], [1], [2]]),
        # a row longer than the budget is a micro-batch of its own, the rows around it fill up
        ([(1, 1), (1, 1), (10, 10), (1, 1)], 1, 5, [[0, 1], [2], [3]]),
        ([(10, 10)], 1, 5, [[0]]),
        # greedy in order: no reordering to pack better
        ([(3, 3), (1, 1), (3, 3), (1, 1)], 1, 8, [[0, 1], [2, 3]]),
        # with a budget the row count is ignored (as veRL ignores the micro-batch size)
        ([(1, 0)] * 6, 2, 100, [[0, 1, 2, 3, 4, 5]]),
    ],
)
def test_split_micro(tokens, size, budget, expected):
    assert split_micro(rows_of(*tokens), size, budget) == expected


def test_every_process_pads_to_the_most_micro_batches_of_any():
    # group 0 is short rows, group 1 long ones: with 2 processes each takes one group
    rows = rows_of(*[(1, 1)] * 4, group=0) + rows_of(*[(5, 5)] * 4, group=1)
    indices = list(range(len(rows)))
    for rank in (0, 1):
        par = Parallel("ddp", rank=rank, world=2)
        assert par.micro_batches(rows, indices, 4) == 1
        # rank 0: 8 tokens in one pass; rank 1: four 10-token rows, two a pass
        assert par.micro_batches(rows, indices, 4, max_tokens=20) == 2
    assert Parallel("single").micro_batches(rows, indices, 3, max_tokens=None) == 3
    assert Parallel("single").micro_batches(rows, indices, 3, max_tokens=8) == 5
