"""The RL questions as prep writes them: the train/test split and the veRL-format rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proactive_rl.shared.errors import UserError
from proactive_rl.stages.prep.config import PrepConfig
from proactive_rl.stages.prep.sources import Question


@dataclass
class Split:
    """Positions in the RL questions: train (possibly reordered by rl_known_fraction) and test."""

    train: Sequence[int]
    test: range


def split_rows(
    n: int, test_fraction: float, min_test_rows: int, test_rows: int | None = None
) -> tuple[range, range]:
    """Train is the head, test the tail (file order, as the recipe does): `test_rows` questions,
    else a `test_fraction` of them. An empty test split borrows the last train rows, so
    evaluation always has something to run on.

    >>> split_rows(100, 0.05, 4)
    (range(0, 95), range(95, 100))
    >>> split_rows(10, 0.0, 4)
    (range(0, 10), range(6, 10))
    >>> split_rows(300, 0.05, 4, test_rows=200)
    (range(0, 100), range(100, 300))
    """
    n_train = max(0, n - test_rows) if test_rows else int(n * (1 - test_fraction) + 1e-9)
    if n_train == n:
        return range(n), range(max(0, n - min_test_rows), n)
    return range(n_train), range(n_train, n)


def check_splits(
    sources: list[Path], questions: int, train: range, test: range, config: PrepConfig
) -> None:
    """Refuse, before data/processed is replaced, a split with no question: grpo would find
    no step to train, eval nothing to grade."""
    where = ", ".join(str(p) for p in sources)
    for name, rows in (("train", train), ("test", test)):
        if not rows:
            raise UserError(
                f"{where}: {questions} RL question(s) after max_rl_rows/rl_source_limits leave "
                f"the {name} split empty (test_fraction={config.test_fraction}, test_rows="
                f"{config.test_rows}); give more questions, or hold out fewer"
            )


def split_questions(config: PrepConfig, sources: list[Path], n: int) -> Split:
    """The split of `n` questions by the config; one that leaves a split empty is refused."""
    train, test = split_rows(n, config.test_fraction, config.min_test_rows, config.test_rows)
    check_splits(sources, n, train, test, config)
    return Split(train, test)


def rl_records(config: PrepConfig, questions: list[Question]) -> list[dict[str, Any]]:
    """One RL_DATA row per question: the veRL format (system + user prompt, rule reward)."""
    return [
        {
            "data_source": config.data_source,
            "prompt": [
                {"role": "system", "content": config.system_prompt},
                {"role": "user", "content": q["question"]},
            ],
            "ability": "reasoning",
            "reward_model": {"style": "rule", "ground_truth": q["answer"]},
            "extra_info": {
                "index": q["index"],
                "original_id": q["original_id"],
                "sub_category": q["sub_category"],
            },
        }
        for q in questions
    ]


def sub_categories(questions: list[Question], split: Split) -> dict[str, dict[str, int]]:
    """Per split, how many questions of each sub_category (in the split's order)."""
    return {
        name: dict(Counter(questions[i]["sub_category"] for i in rows))
        for name, rows in (("train", split.train), ("test", split.test))
    }
