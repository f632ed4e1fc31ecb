"""proactive prep: the users' files -> data/processed (SFT sample + veRL-format RL parquet).

proactive prep --data-dir data --set num_sft_samples=50
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import click

from proactive_rl.common import config_options
from proactive_rl.prep.config import PrepConfig
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths
from proactive_rl.shared.publish import (
    is_stable,
    publish_dir,
    read_marker,
    sha256_file,
    staging_dir,
)

logger = logging.getLogger(__name__)


@click.command(
    help="Prepare data: sample NUM_SFT_SAMPLES SFT conversations (seeded) from the users' SFT "
    "JSONL and turn the RL questions (users' JSONL or SimpleQA CSV) into veRL-format parquet "
    "with a 95/5 train/test split in file order. Writes <data-dir>/processed/ atomically; "
    "does nothing when inputs and config are unchanged.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n" + describe(PrepConfig),
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("data"),
    show_default=True,
    help="Data volume: inputs default to its sample/ folder, outputs go to its processed/.",
)
@config_options
@click.option("--force", is_flag=True, help="Rebuild even if inputs are unchanged.")
def command(data_dir: Path, config_file: Path | None, overrides: tuple[str, ...], force: bool):
    config = load_config(PrepConfig, config_file, overrides)
    run(config, data_dir, force=force)


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any], str]]:
    """(line number, object, raw line) for every non-blank line; bad JSON names file and line."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, obj, line.rstrip("\n")))
    return rows


def check_sft_row(path: Path, lineno: int, obj: dict[str, Any]) -> None:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{path}:{lineno}: missing a non-empty 'messages' list")
    for msg in messages:
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("content"), str)
            or msg.get("role") not in ("system", "user", "assistant")
        ):
            raise UserError(f"{path}:{lineno}: each message needs a role and a string content")
    if messages[-1]["role"] != "assistant":
        raise UserError(f"{path}:{lineno}: the last message must be the assistant's answer")


def read_rl_questions(path: Path) -> list[dict[str, Any]]:
    """Questions as {question, answer, original_id, sub_category} from JSONL or SimpleQA CSV."""
    if path.suffix.lower() == ".csv":
        return read_simpleqa_csv(path)
    questions = []
    for lineno, obj, _ in read_jsonl(path):
        messages = obj.get("messages")
        if not isinstance(messages, list):
            raise UserError(f"{path}:{lineno}: missing a 'messages' list")
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        assistant = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
        if not user or not assistant:
            raise UserError(
                f"{path}:{lineno}: needs a user turn (the question) and an assistant turn "
                "(the ground truth)"
            )
        answer = str(assistant[-1].get("content", "")).strip()
        if not answer:
            raise UserError(f"{path}:{lineno}: the assistant turn (ground truth) is empty")
        questions.append(
            {
                "question": str(user[0].get("content", "")),
                "answer": answer,
                "original_id": str(obj.get("id", lineno - 1)),
                "sub_category": str(obj.get("sub_category", "")),
            }
        )
    return questions


def read_simpleqa_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        q_col = next((c for c in ("question", "problem") if c in fields), None)
        a_col = next((c for c in ("true_answer", "answer") if c in fields), None)
        if q_col is None or a_col is None:
            raise UserError(
                f"{path}: expected SimpleQA columns question/true_answer (or problem/answer), "
                f"found {fields}"
            )
        questions = []
        for index, row in enumerate(reader):
            answer = (row.get(a_col) or "").strip()
            if not answer:
                # header is line 1; csv rows can span lines, so name the row, not the line
                raise UserError(f"{path}: data row {index + 1} has an empty {a_col}")
            questions.append(
                {
                    "question": row[q_col],
                    "answer": answer,
                    "original_id": str(index),
                    "sub_category": "simpleQA",
                }
            )
    return questions


def split_rows(n: int, test_fraction: float, min_test_rows: int) -> tuple[range, range]:
    """Train is the head, test the tail (file order, as the recipe does). An empty test split
    borrows the last train rows, so evaluation always has something to run on.

    >>> split_rows(100, 0.05, 4)
    (range(0, 95), range(95, 100))
    >>> split_rows(10, 0.0, 4)
    (range(0, 10), range(6, 10))
    """
    n_train = int(n * (1 - test_fraction) + 1e-9)
    if n_train == n:
        return range(n), range(max(0, n - min_test_rows), n)
    return range(n_train), range(n_train, n)


def fingerprint(config: PrepConfig, inputs: list[Path]) -> str:
    digest = hashlib.sha256(config.model_dump_json().encode())
    for path in inputs:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def run(config: PrepConfig, data_dir: Path, force: bool = False) -> None:
    import pyarrow as pa  # noqa: F401  (pyarrow is heavy-ish; keep --help instant)

    from proactive_rl.shared.schemas import RL_DATA, write_table

    paths = DataPaths(data_dir)
    sft_source = config.sft_source or paths.sample_sft
    rl_source = config.rl_source or paths.sample_rl
    for source in (sft_source, rl_source):
        if not source.is_file():
            raise UserError(f"input file {source} does not exist")

    key = fingerprint(config, [sft_source, rl_source])
    if (
        not force
        and is_stable(paths.processed)
        and read_marker(paths.processed).get("fingerprint") == key
    ):
        logger.info("inputs and config unchanged: %s is up to date, nothing to do", paths.processed)
        return

    # SFT: validate every line (users get all problems reported by line), then sample.
    sft_rows = read_jsonl(sft_source)
    for lineno, obj, _ in sft_rows:
        check_sft_row(sft_source, lineno, obj)
    if len(sft_rows) < config.num_sft_samples:
        logger.warning(
            "%s has %d conversations, fewer than num_sft_samples=%d: using all of them",
            sft_source,
            len(sft_rows),
            config.num_sft_samples,
        )
        sampled = sft_rows
    else:
        sampled = random.Random(config.seed).sample(sft_rows, config.num_sft_samples)

    questions = read_rl_questions(rl_source)
    if config.max_rl_rows is not None:
        questions = questions[: config.max_rl_rows]
    if not questions:
        raise UserError(f"{rl_source}: no RL questions found")
    records = [
        {
            "data_source": config.data_source,
            "prompt": [
                {"role": "system", "content": config.system_prompt},
                {"role": "user", "content": q["question"]},
            ],
            "ability": "reasoning",
            "reward_model": {"style": "rule", "ground_truth": q["answer"]},
            "extra_info": {
                "index": index,
                "original_id": q["original_id"],
                "sub_category": q["sub_category"],
            },
        }
        for index, q in enumerate(questions)
    ]
    train_idx, test_idx = split_rows(len(records), config.test_fraction, config.min_test_rows)

    staging = staging_dir(paths.processed)
    with open(staging / paths.sft_train.name, "w", encoding="utf-8") as fh:
        for _, _, raw in sampled:
            fh.write(raw + "\n")
    n_train = write_table([records[i] for i in train_idx], RL_DATA, staging / paths.rl_train.name)
    n_test = write_table([records[i] for i in test_idx], RL_DATA, staging / paths.rl_test.name)
    publish_dir(
        staging,
        paths.processed,
        {
            "fingerprint": key,
            "config": config.model_dump(mode="json"),
            "inputs": {"sft": str(sft_source), "rl": str(rl_source)},
            "rows": {"sft_train": len(sampled), "rl_train": n_train, "rl_test": n_test},
        },
    )
    logger.info(
        "wrote %s: %d SFT conversations, %d RL train and %d RL test questions",
        paths.processed,
        len(sampled),
        n_train,
        n_test,
    )
