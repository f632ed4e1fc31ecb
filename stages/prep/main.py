"""proactive prep: the users' files -> data/processed (SFT sample + veRL-format RL parquet).

    proactive prep --data-dir data --set num_sft_samples=50
    proactive prep --set 'rl_source=["data/sample/rl.jsonl", "simple_qa_test_set.csv"]' \\
        --set 'rl_source_limits=[null, 300]' --set shuffle_rl=true --set sft_source=build

Inputs, the RL mix and the warm-up builder are described in docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths, record_path
from proactive_rl.shared.publish import is_stable, read_marker, sha256_file, staged, verify
from proactive_rl.stages.common import check_writable, config_options
from proactive_rl.stages.prep.config import PrepConfig
from proactive_rl.stages.prep.sources import check_sft_row, read_jsonl, read_rl_mix
from proactive_rl.stages.prep.warmup import (
    balance_known,
    build_conversation,
    check_measured,
    decide_known,
    read_known_from,
    sample_indices,
)

logger = logging.getLogger(__name__)


@click.command(
    help="Prepare data: sample NUM_SFT_SAMPLES SFT conversations (seeded) from the users' SFT "
    "JSONL (or build warm-up conversations from the RL train questions: sft_source=build) and "
    "turn the RL questions (users' JSONL and/or SimpleQA CSV files, mixed in order) into "
    "veRL-format parquet with a 95/5 train/test split in file order (or shuffled: shuffle_rl). "
    "Writes <data-dir>/processed/ atomically; does nothing when inputs and config are unchanged.",
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
def command(
    data_dir: Path,
    recipe: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    force: bool,
):
    config = load_config(PrepConfig, config_file, overrides, recipe or None, "prep")
    run(config, data_dir, force=force)


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


def fingerprint(config: PrepConfig, inputs: list[Path]) -> str:
    digest = hashlib.sha256(config.model_dump_json().encode())
    for path in inputs:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sample_sft_file(config: PrepConfig, source: Path) -> tuple[list[str], int]:
    """The sampled raw lines of the users' SFT file (copied byte for byte) and how many of them
    have a proactive block. Every line is validated first, so users see problems by line."""
    from proactive_rl.shared.tags import has_proactive

    rows = read_jsonl(source)
    if not rows:
        # refused before anything is written: an empty file must not replace good SFT data
        raise UserError(f"{source} holds no conversations (no non-blank line)")
    for lineno, obj, _ in rows:
        check_sft_row(source, lineno, obj)
    if len(rows) < config.num_sft_samples:
        logger.warning(
            "%s has %d conversations, fewer than num_sft_samples=%d: using all of them",
            source,
            len(rows),
            config.num_sft_samples,
        )
    flags = [has_proactive(obj["messages"][-1]["content"]) for _, obj, _ in rows]
    keep = sample_indices(flags, config.num_sft_samples, config.proactive_fraction, config.seed)
    return [rows[i][2] for i in keep], sum(flags[i] for i in keep)


def build_sft(
    config: PrepConfig, questions: list[dict[str, Any]], train: range, test: range
) -> tuple[list[str], int, dict[str, Any], dict[int, bool]]:
    """Warm-up conversations from the RL train questions (never a test question, even when the
    test split borrows train rows), sampled like a file; plus the numbers for the marker and
    which train questions (positions in `questions`) count as known."""
    held_out = set(test)
    candidates = [questions[i] for i in train if i not in held_out]
    if not candidates:
        raise UserError(
            "sft_source=build: the RL train split has no question outside the test split"
        )
    measured, checkpoint = None, None
    if config.known_from is not None:
        measured, checkpoint = read_known_from(config.known_from, config.known_checkpoint)
        check_measured(measured, {q["index"]: q for q in questions}, config.known_from)
    known, n_measured = decide_known(
        candidates, config.known_categories, measured, config.known_threshold
    )
    if measured is not None and n_measured == 0:
        logger.warning(
            "%s measured none of the %d RL train questions, so all were decided by "
            "known_categories; measure them with `proactive eval --set split=train`",
            config.known_from,
            len(candidates),
        )
    proactive = [not k for k in known]
    if len(candidates) < config.num_sft_samples:
        logger.warning(
            "sft_source=build: %d RL train questions, fewer than num_sft_samples=%d: using all",
            len(candidates),
            config.num_sft_samples,
        )
    keep = sample_indices(proactive, config.num_sft_samples, config.proactive_fraction, config.seed)
    lines = [
        json.dumps(
            build_conversation(candidates[i], known[i], config.seed, config.system_prompt),
            ensure_ascii=False,
        )
        for i in keep
    ]
    n_proactive = sum(proactive[i] for i in keep)
    meta = {
        "built": {"known": len(known) - sum(proactive), "proactive": sum(proactive)},
        "sampled": {"known": len(keep) - n_proactive, "proactive": n_proactive},
        "decided_by": {"measured": n_measured, "category": len(candidates) - n_measured},
        "known_from": str(config.known_from) if config.known_from else None,
        "known_checkpoint": checkpoint,
    }
    logger.info(
        "built %d warm-up conversations from RL train questions: %d known (plain answer), "
        "%d proactive (%d decided by measured accuracy, %d by category); sampled %d: "
        "%d known, %d proactive",
        len(candidates),
        meta["built"]["known"],
        meta["built"]["proactive"],
        n_measured,
        len(candidates) - n_measured,
        len(keep),
        meta["sampled"]["known"],
        n_proactive,
    )
    held_in = [i for i in train if i not in held_out]
    return lines, n_proactive, meta, dict(zip(held_in, known, strict=True))


def order_train(
    train: range, known: dict[int, bool], fraction: float, seed: int
) -> tuple[list[int], dict[str, int]]:
    """The train rows in rl_known_fraction's order, and how many known ones lead it."""
    flags = [known.get(i, False) for i in train]
    order = [train[k] for k in balance_known(flags, fraction, seed)]
    n_known = sum(flags)
    # the balanced prefix ends where one kind runs out
    prefix = min(len(order), int(n_known / fraction), int((len(order) - n_known) / (1 - fraction)))
    logger.info(
        "RL train split ordered by measured knowledge: %d known of %d; its first %d rows hold "
        "%.0f%% known (rl_known_fraction=%s), grpo's max_prompts should stay within them",
        n_known,
        len(order),
        prefix,
        100 * fraction,
        fraction,
    )
    return order, {"known": n_known, "rows": len(order), "balanced_prefix": prefix}


def up_to_date(processed: Path, key: str) -> bool:
    """data/processed was published from these inputs and this config, and its files are still
    the ones published: a truncated or altered file is rebuilt, not kept."""
    if not is_stable(processed) or read_marker(processed).get("fingerprint") != key:
        return False
    try:
        verify(processed)
    except UserError as err:
        logger.warning("%s: rebuilding it", err)
        return False
    return True


def run(config: PrepConfig, data_dir: Path, force: bool = False) -> None:
    import pyarrow as pa  # noqa: F401  (pyarrow is heavy-ish; keep --help instant)

    from proactive_rl.shared.schemas import RL_DATA, write_table

    paths = DataPaths(data_dir)
    build = config.sft_source == "build"
    sft_source = None if build else Path(config.sft_source or paths.sample_sft)
    rl_sources = config.rl_paths(paths.sample_rl)
    inputs = [*([sft_source] if sft_source else []), *rl_sources]
    inputs += [config.known_from] if config.known_from else []
    for source in inputs:
        if not source.is_file():
            raise UserError(f"input file {source} does not exist")

    key = fingerprint(config, inputs)
    if not force and up_to_date(paths.processed, key):
        logger.info("inputs and config unchanged: %s is up to date, nothing to do", paths.processed)
        return
    check_writable([paths.root, paths.processed], "pass another --data-dir")

    if sft_source is not None:
        sft_lines, sft_proactive = sample_sft_file(config, sft_source)

    questions, mix = read_rl_mix(
        rl_sources, config.rl_source_limits, config.shuffle_rl, config.seed, config.max_rl_rows
    )
    # named in the marker relative to the data directory when inside it, else absolute
    rl_named = [record_path(path, data_dir) for path in rl_sources]
    for source, named in zip(mix, rl_named, strict=True):
        source["path"] = named
        logger.info(
            "RL source %s: %d questions %s",
            source["path"],
            source["questions"],
            source["sub_categories"],
        )
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
                "index": q["index"],
                "original_id": q["original_id"],
                "sub_category": q["sub_category"],
            },
        }
        for q in questions
    ]
    train_idx, test_idx = split_rows(
        len(records), config.test_fraction, config.min_test_rows, config.test_rows
    )
    check_splits(rl_sources, len(records), train_idx, test_idx, config)
    warmup = None
    if build:
        sft_lines, sft_proactive, warmup, known = build_sft(config, questions, train_idx, test_idx)
        if config.rl_known_fraction is not None:
            train_idx, warmup["rl_train_order"] = order_train(
                train_idx, known, config.rl_known_fraction, config.seed
            )

    split_mix = {
        name: dict(Counter(questions[i]["sub_category"] for i in rows))
        for name, rows in (("train", train_idx), ("test", test_idx))
    }
    meta = {
        "fingerprint": key,
        "config": config.model_dump(mode="json"),
        "inputs": {
            "sft": "build" if build else record_path(sft_source, data_dir),
            # one path stays a string, as before; a mix is the list in order
            "rl": rl_named[0] if len(rl_named) == 1 else rl_named,
        },
        "rl_sources": mix,
        "rl_sub_categories": split_mix,
        "sft_proactive": sft_proactive,
        **({"warmup": warmup} if warmup is not None else {}),
    }
    train_rows, test_rows = [records[i] for i in train_idx], [records[i] for i in test_idx]
    # a full disk removes the half-written folder; the earlier data/processed stays as it was
    with staged(paths.processed, meta) as staging:
        with open(staging / paths.sft_train.name, "w", encoding="utf-8") as fh:
            for line in sft_lines:
                fh.write(line + "\n")
        n_train = write_table(train_rows, RL_DATA, staging / paths.rl_train.name)
        n_test = write_table(test_rows, RL_DATA, staging / paths.rl_test.name)
        meta["rows"] = {"sft_train": len(sft_lines), "rl_train": n_train, "rl_test": n_test}
    logger.info(
        "wrote %s: %d SFT conversations (%d proactive), %d RL train and %d RL test questions "
        "(train %s, test %s)",
        paths.processed,
        len(sft_lines),
        sft_proactive,
        n_train,
        n_test,
        split_mix["train"],
        split_mix["test"],
    )
