"""Parquet schemas exchanged between stages, declared once.

RL_DATA matches veRL's processed-data format, so users can move files between veRL and us.
ROLLOUTS is one row per sampled response; a step's file always holds whole groups of n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from proactive_rl.shared.errors import UserError

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

RL_DATA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(MESSAGE)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [("index", pa.int64()), ("original_id", pa.string()), ("sub_category", pa.string())]
            ),
        ),
    ]
)

ROLLOUTS = pa.schema(
    [
        ("step", pa.int64()),  # RL step this row was generated for
        ("policy_version", pa.int64()),  # the policy that sampled it (== step when on-policy)
        ("group_id", pa.int64()),  # row index of the prompt in rl_train.parquet
        ("sample_index", pa.int32()),  # 0..n-1 within the group
        ("data_source", pa.string()),
        ("prompt_text", pa.string()),  # the chat-templated prompt exactly as sampled
        ("prompt_ids", pa.list_(pa.int32())),
        ("response_ids", pa.list_(pa.int32())),
        ("response_text", pa.string()),
        ("sampling_logprobs", pa.list_(pa.float32())),  # one per response token
        ("finish_reason", pa.string()),  # "stop" (eos) or "length" (cut at max tokens)
        ("ground_truth", pa.string()),
        ("reward", pa.float64()),
        ("reward_parts", pa.map_(pa.string(), pa.float64())),
    ]
)


class RolloutRow(TypedDict):
    """One ROLLOUTS row as Python sees it (pyarrow's to_pylist / from_pylist): the same columns,
    so the rollout loop and the update name their fields with a type. A test keeps the two equal."""

    step: int
    policy_version: int
    group_id: int
    sample_index: int
    data_source: str
    prompt_text: str
    prompt_ids: list[int]
    response_ids: list[int]
    response_text: str
    sampling_logprobs: list[float]
    finish_reason: str
    ground_truth: str
    reward: float
    reward_parts: dict[str, float] | list[tuple[str, float]]  # from_pylist: dict; to_pylist: pairs


def write_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, path: Path) -> int:
    """Write rows (dicts keyed by column) with `schema`; returns the row count."""
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)
    return table.num_rows


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """Read a parquet file and check it carries `schema`'s columns with castable types."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(f"{path}: not a readable parquet file: {err}") from err
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; expected {schema.names}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise UserError(f"{path}: columns do not match the expected schema: {err}") from err
