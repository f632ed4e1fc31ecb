"""metrics.jsonl and tensorboard events written by MetricsLogger (shared/metrics.py)."""

from __future__ import annotations

import math
import time

import pytest

from proactive_rl.shared.metrics import MetricsLogger, read_metrics

STEPS = [
    (0, {"loss": 1.5, "reward/mean": 0.25, "opt/updates": 4}),
    (
        1,
        {
            "loss": float("nan"),
            "reward/mean": 0.5,
            "name": "abc",
            "done": True,
            "big": float("inf"),
            "parts": [1, 2],
            "opt/updates": 8,
        },
    ),
    (2, {"loss": 0.75}),
]


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_and_tensorboard(tmp_path):
    log_dir = tmp_path / "logs" / "grpo"  # created by the logger
    before = time.time()
    logger = MetricsLogger(log_dir)
    for step, values in STEPS:
        logger.log(step, values)
    logger.close()

    records = read_metrics(log_dir)
    assert len(records) == len(STEPS)
    assert len((log_dir / "metrics.jsonl").read_text().splitlines()) == len(STEPS)
    for record, (step, values) in zip(records, STEPS, strict=True):
        assert record["step"] == step
        assert before <= record["time"] <= time.time()
        assert set(record) == {"step", "time", *values}
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                assert record[key] is None  # strict JSON: nan/inf are written as null
            else:
                assert record[key] == value

    assert list(log_dir.glob("events.out.tfevents.*"))
    # only finite numbers reach tensorboard; strings, booleans, lists, nan and inf are skipped
    assert _scalars(log_dir) == {
        "loss": [(0, 1.5), (2, 0.75)],
        "reward/mean": [(0, 0.25), (1, 0.5)],
        "opt/updates": [(0, 4.0), (1, 8.0)],
    }


def test_without_tensorboard_only_jsonl(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(3, {"acc": 0.5})
    logger.close()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    assert [(r["step"], r["acc"]) for r in read_metrics(tmp_path)] == [(3, 0.5)]


def test_a_resumed_logger_appends(tmp_path):
    for step in (0, 1):
        logger = MetricsLogger(tmp_path, tensorboard=False)
        logger.log(step, {"loss": float(step)})
        logger.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(0, 0.0), (1, 1.0)]


@pytest.mark.parametrize("make", [lambda d: None, lambda d: d.mkdir()])
def test_read_metrics_without_a_log_is_empty(tmp_path, make):
    make(tmp_path / "logs")
    assert read_metrics(tmp_path / "logs") == []
