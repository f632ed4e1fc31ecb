"""Parquet schemas round-trip; read_table rejects files without them (shared/schemas.py)."""

from __future__ import annotations

from typing import get_type_hints

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.schemas import RL_DATA, ROLLOUTS, RolloutRow, read_table, write_table

RL_ROWS = [
    {
        "data_source": "sampleQA",
        "prompt": [
            {"role": "system", "content": "You are a helpful proactive assistant."},
            {"role": "user", "content": "Qui a écrit « L'Étranger » ? 日本語も"},
        ],
        "ability": "qa",
        "reward_model": {"style": "rule", "ground_truth": "Albert Camus"},
        "extra_info": {"index": 0, "original_id": "q-0", "sub_category": "literature"},
    },
    {
        "data_source": "sampleQA",
        "prompt": [],  # empty list survives as an empty list, not as null
        "ability": "",
        "reward_model": {"style": "rule", "ground_truth": "🙂"},
        "extra_info": {"index": 2**40, "original_id": None, "sub_category": None},
    },
]

ROLLOUT_ROWS = [
    {
        "step": 3,
        "policy_version": 2,
        "group_id": 17,
        "sample_index": 0,
        "data_source": "sampleQA",
        "prompt_text": "<|user|>Wer?\n<|assistant|>",
        "prompt_ids": [1, 2, 3, 2**31 - 1],
        "response_ids": [9, 8],
        "response_text": "<think>hm</think> Camus ✓",
        "sampling_logprobs": [-0.5, -1.25],  # exact in float32
        "finish_reason": "stop",
        "ground_truth": "Albert Camus",
        "reward": 1.0,
        "reward_parts": {"correct": 1.0, "format": 0.5, "proactive": 0.0},
    },
    {
        "step": 3,
        "policy_version": 3,
        "group_id": 17,
        "sample_index": 1,
        "data_source": "sampleQA",
        "prompt_text": "",
        "prompt_ids": [1],
        "response_ids": [],  # cut at zero tokens: empty lists stay empty lists
        "response_text": "",
        "sampling_logprobs": [],
        "finish_reason": "length",
        "ground_truth": "",
        "reward": -0.25,
        "reward_parts": {},
    },
]


def _as_written(row: dict) -> dict:
    # pyarrow gives a map column back as (key, value) pairs in their order (consumers use dict())
    if "reward_parts" in row:
        return {**row, "reward_parts": list(row["reward_parts"].items())}
    return row


@pytest.mark.parametrize("schema, rows", [(RL_DATA, RL_ROWS), (ROLLOUTS, ROLLOUT_ROWS)])
def test_round_trip(tmp_path, schema, rows):
    path = tmp_path / "t.parquet"
    assert write_table(rows, schema, path) == len(rows)
    table = read_table(path, schema)
    assert table.schema == schema
    assert table.to_pylist() == [_as_written(r) for r in rows]


def test_map_column_reads_back_as_a_dict(tmp_path):
    path = tmp_path / "r.parquet"
    write_table(ROLLOUT_ROWS, ROLLOUTS, path)
    parts = [dict(r["reward_parts"]) for r in read_table(path, ROLLOUTS).to_pylist()]
    assert parts == [r["reward_parts"] for r in ROLLOUT_ROWS]


@pytest.mark.parametrize("schema, rows", [(RL_DATA, []), (ROLLOUTS, ROLLOUT_ROWS[:1] * 5)])
def test_write_table_returns_row_count(tmp_path, schema, rows):
    path = tmp_path / "t.parquet"
    assert write_table(rows, schema, path) == len(rows)
    table = read_table(path, schema)
    assert table.num_rows == len(rows)
    assert table.schema == schema


def test_extra_columns_are_dropped_and_order_restored(tmp_path):
    path = tmp_path / "rl.parquet"
    table = pa.Table.from_pylist(RL_ROWS, schema=RL_DATA)
    table = table.append_column("users_note", pa.array(["a", "b"]))
    # the schema's columns in another order, behind a column of the user's own
    table = table.select(["users_note", *reversed(RL_DATA.names)])
    pq.write_table(table, path)

    out = read_table(path, RL_DATA)

    assert out.column_names == RL_DATA.names
    assert out.to_pylist() == RL_ROWS


def test_narrow_int_column_is_cast(tmp_path):
    path = tmp_path / "r.parquet"
    table = pa.Table.from_pylist(ROLLOUT_ROWS, schema=ROLLOUTS)
    index = ROLLOUTS.get_field_index("step")
    table = table.set_column(index, "step", pa.array([3, 3], pa.int16()))
    pq.write_table(table, path)
    out = read_table(path, ROLLOUTS)
    assert out.schema.field("step").type == pa.int64()
    assert out.column("step").to_pylist() == [3, 3]


def _write_without(path, column):
    table = pa.Table.from_pylist(ROLLOUT_ROWS, schema=ROLLOUTS)
    pq.write_table(table.drop_columns([column]), path)


def _write_with(path, column, values):
    table = pa.Table.from_pylist(ROLLOUT_ROWS, schema=ROLLOUTS)
    index = ROLLOUTS.get_field_index(column)
    pq.write_table(table.set_column(index, column, pa.array(values)), path)


# (how the file is made, text the UserError must contain)
BAD_FILES = [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("step,reward\n1,0.5\n"), "not a readable parquet file"),
    (lambda p: p.write_bytes(b""), "not a readable parquet file"),
    (lambda p: _write_without(p, "reward_parts"), "reward_parts"),
    (lambda p: _write_without(p, "group_id"), "group_id"),
    (lambda p: _write_with(p, "step", ["three", "four"]), "do not match the expected schema"),
    (lambda p: _write_with(p, "prompt_ids", ["1 2", "3"]), "do not match the expected schema"),
    (lambda p: _write_with(p, "reward", [[1.0], [2.0]]), "do not match the expected schema"),
]


@pytest.mark.parametrize("make, message", BAD_FILES)
def test_read_table_errors(tmp_path, make, message):
    path = tmp_path / "rollouts.parquet"
    make(path)
    with pytest.raises(UserError, match=message) as err:
        read_table(path, ROLLOUTS)
    assert str(path) in str(err.value)


def test_missing_column_error_lists_only_missing_columns(tmp_path):
    path = tmp_path / "rollouts.parquet"
    _write_without(path, "reward_parts")
    with pytest.raises(UserError, match=r"missing columns \['reward_parts'\]"):
        read_table(path, ROLLOUTS)


def test_rollout_row_names_every_rollouts_column() -> None:
    assert list(get_type_hints(RolloutRow)) == ROLLOUTS.names
