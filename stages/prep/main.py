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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths, record_path
from proactive_rl.shared.publish import is_stable, read_marker, sha256_file, staged, verify
from proactive_rl.stages.common import check_writable, config_options
from proactive_rl.stages.prep.config import PrepConfig
from proactive_rl.stages.prep.records import Split, rl_records, split_questions, sub_categories
from proactive_rl.stages.prep.sources import (
    Question,
    SourceSummary,
    check_sft_row,
    read_jsonl,
    read_rl_mix,
)
from proactive_rl.stages.prep.warmup import (
    KnownFrom,
    balance_known,
    balance_within_kinds,
    balanced_length,
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
) -> None:
    run(resolve(recipe, config_file, overrides), data_dir, force=force)


def resolve(recipe: str | None, config_file: Path | None, overrides: tuple[str, ...]) -> PrepConfig:
    """The stage's config from its options, as `proactive prep` and `proactive preflight` read
    it."""
    return load_config(PrepConfig, config_file, overrides, recipe or None, "prep")


@dataclass
class Inputs:
    """The stage's input files, all of which the fingerprint covers."""

    sft: Path | None  # None: sft_source=build
    rl: list[Path]
    known_from: Path | None

    @property
    def files(self) -> list[Path]:
        return [
            *([self.sft] if self.sft else []),
            *self.rl,
            *([self.known_from] if self.known_from else []),
        ]


@dataclass
class RlMix:
    """The RL questions in output order, the marker's summary per source, and the sources as
    the marker names them."""

    questions: list[Question]
    sources: list[SourceSummary]
    named: list[str]


@dataclass
class SftSample:
    """The SFT conversations to write (one JSON line each) and how many hold a proactive block."""

    lines: list[str]
    n_proactive: int


class KindCounts(TypedDict):
    known: int
    proactive: int


class WarmupSection(TypedDict):
    """The marker's `warmup` section: what was built and sampled, and what decided it."""

    built: KindCounts
    sampled: KindCounts
    decided_by: dict[str, int]  # measured / category
    known_from: str | None
    known_checkpoint: str | None
    rl_train_order: NotRequired[dict[str, Any]]  # with rl_known_fraction


@dataclass
class Warmup:
    """sft_source=build: the conversations, the marker's `warmup` section, and which train
    questions (positions in the RL questions) count as known."""

    sample: SftSample
    marker: WarmupSection
    known: dict[int, bool]


def fingerprint(config: PrepConfig, inputs: list[Path]) -> str:
    digest = hashlib.sha256(config.model_dump_json().encode())
    for path in inputs:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def sample_sft_file(config: PrepConfig, source: Path) -> SftSample:
    """The sampled raw lines of the users' SFT file (copied byte for byte) and how many of them
    have a proactive block. Every line is validated first, so users see problems by line."""
    from proactive_rl.shared.tags import has_proactive

    rows = read_jsonl(source)
    if not rows:
        # refused before anything is written: an empty file must not replace good SFT data
        raise UserError(f"{source} holds no conversations (no non-blank line)")
    for row in rows:
        check_sft_row(source, row.lineno, row.obj)
    if len(rows) < config.num_sft_samples:
        logger.warning(
            "%s has %d conversations, fewer than num_sft_samples=%d: using all of them",
            source,
            len(rows),
            config.num_sft_samples,
        )
    flags = [has_proactive(row.obj["messages"][-1]["content"]) for row in rows]
    keep = sample_indices(flags, config.num_sft_samples, config.proactive_fraction, config.seed)
    return SftSample([rows[i].line for i in keep], sum(flags[i] for i in keep))


def build_sft(
    config: PrepConfig, questions: list[Question], train: Sequence[int], test: range
) -> Warmup:
    """Warm-up conversations from the RL train questions (never a test question, even when the
    test split borrows train rows), sampled like a file; plus the numbers for the marker and
    which train questions (positions in `questions`) count as known."""
    held_out = set(test)
    held_in = [i for i in train if i not in held_out]
    candidates = [questions[i] for i in held_in]
    if not candidates:
        raise UserError(
            "sft_source=build: the RL train split has no question outside the test split"
        )
    known_from = read_measured(config, questions)
    known, n_measured = decide(config, candidates, known_from)
    proactive = [not k for k in known]
    if len(candidates) < config.num_sft_samples:
        logger.warning(
            "sft_source=build: %d RL train questions, fewer than num_sft_samples=%d: using all",
            len(candidates),
            config.num_sft_samples,
        )
    keep = sample_indices(proactive, config.num_sft_samples, config.proactive_fraction, config.seed)
    sample = SftSample(
        [warmup_line(config, candidates[i], known[i]) for i in keep],
        sum(proactive[i] for i in keep),
    )
    section = warmup_marker(config, known_from, proactive, keep, n_measured)
    log_warmup(section)
    return Warmup(sample, section, dict(zip(held_in, known, strict=True)))


def read_measured(config: PrepConfig, questions: list[Question]) -> KnownFrom | None:
    """known_from's measurements, checked against this RL mix; None without known_from."""
    if config.known_from is None:
        return None
    known_from = read_known_from(config.known_from, config.known_checkpoint)
    check_measured(known_from.measured, {q["index"]: q for q in questions}, config.known_from)
    return known_from


def decide(
    config: PrepConfig, candidates: list[Question], known_from: KnownFrom | None
) -> tuple[list[bool], int]:
    """Per candidate: known? (measured where known_from has it, else by category), and how
    many were measured."""
    known, n_measured = decide_known(
        candidates,
        config.known_categories,
        known_from.measured if known_from else None,
        config.known_threshold,
    )
    if known_from is not None and n_measured == 0:
        logger.warning(
            "%s measured none of the %d RL train questions, so all were decided by "
            "known_categories; measure them with `proactive eval --set split=train`",
            config.known_from,
            len(candidates),
        )
    return known, n_measured


def warmup_line(config: PrepConfig, question: Question, known: bool) -> str:
    conversation = build_conversation(question, known, config.seed, config.system_prompt)
    return json.dumps(conversation, ensure_ascii=False)


def warmup_marker(
    config: PrepConfig,
    known_from: KnownFrom | None,
    proactive: list[bool],
    keep: list[int],
    n_measured: int,
) -> WarmupSection:
    """The marker's `warmup` section: how many were built and sampled of each kind, and why."""
    n_proactive = sum(proactive[i] for i in keep)
    return {
        "built": {"known": len(proactive) - sum(proactive), "proactive": sum(proactive)},
        "sampled": {"known": len(keep) - n_proactive, "proactive": n_proactive},
        "decided_by": {"measured": n_measured, "category": len(proactive) - n_measured},
        "known_from": str(config.known_from) if config.known_from else None,
        "known_checkpoint": known_from.checkpoint if known_from else None,
    }


def log_warmup(section: WarmupSection) -> None:
    built, sampled, decided = section["built"], section["sampled"], section["decided_by"]
    logger.info(
        "built %d warm-up conversations from RL train questions: %d known (plain answer), "
        "%d proactive (%d decided by measured accuracy, %d by category); sampled %d: "
        "%d known, %d proactive",
        built["known"] + built["proactive"],
        built["known"],
        built["proactive"],
        decided["measured"],
        decided["category"],
        sampled["known"] + sampled["proactive"],
        sampled["known"],
        sampled["proactive"],
    )


def order_train(
    train: Sequence[int],
    known: dict[int, bool],
    kinds: list[str] | None,
    fraction: float,
    seed: int,
) -> tuple[list[int], dict[str, Any]]:
    """The train rows in rl_known_fraction's order (within each kind when `kinds`, the train
    rows' sub_categories, are given), and how many known ones lead it."""
    flags = [known.get(i, False) for i in train]
    n_known = sum(flags)
    summary: dict[str, Any] = {"known": n_known, "rows": len(train)}
    if kinds is None:
        order = [train[k] for k in balance_known(flags, fraction, seed)]
        prefix = balanced_length(n_known, len(order), fraction)
    else:
        positions, lead = balance_within_kinds(flags, kinds, fraction, seed)
        order, prefix = [train[k] for k in positions], sum(lead.values())
        summary["lead_by_kind"] = lead
        logger.info("balanced within each kind: %s", ", ".join(f"{k} {n}" for k, n in lead.items()))
    logger.info(
        "RL train split ordered by measured knowledge: %d known of %d; its first %d rows hold "
        "%.0f%% known (rl_known_fraction=%s), grpo's max_prompts should stay within them",
        n_known,
        len(order),
        prefix,
        100 * fraction,
        fraction,
    )
    return order, summary | {"balanced_prefix": prefix}


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
    """Write <data_dir>/processed from the inputs, or nothing when it is up to date."""
    import pyarrow as pa  # noqa: F401  (pyarrow is heavy-ish; keep --help instant)

    paths = DataPaths(data_dir)
    inputs = find_inputs(config, paths)
    key = fingerprint(config, inputs.files)
    if not force and up_to_date(paths.processed, key):
        logger.info("inputs and config unchanged: %s is up to date, nothing to do", paths.processed)
        return
    check_writable([paths.root, paths.processed], "pass another --data-dir")

    from_file = sample_sft_file(config, inputs.sft) if inputs.sft is not None else None
    mix = read_mix(config, inputs.rl, data_dir)
    split = split_questions(config, inputs.rl, len(mix.questions))
    if from_file is not None:
        sft, warmup = from_file, None
    else:
        warmup = warm_up(config, mix.questions, split)
        sft = warmup.sample
    meta = marker(config, key, inputs, mix, split, sft, warmup, data_dir)
    write_processed(paths, meta, sft, rl_records(config, mix.questions), split)


def warm_up(config: PrepConfig, questions: list[Question], split: Split) -> Warmup:
    """sft_source=build: the warm-up conversations; with rl_known_fraction the train split is
    reordered (in place) so that its every prefix mixes known and unknown questions."""
    warmup = build_sft(config, questions, split.train, split.test)
    if config.rl_known_fraction is not None:
        kinds = None
        if config.rl_known_within_kinds:
            kinds = [questions[i]["sub_category"] for i in split.train]
        split.train, warmup.marker["rl_train_order"] = order_train(
            split.train, warmup.known, kinds, config.rl_known_fraction, config.seed
        )
    return warmup


def find_inputs(config: PrepConfig, paths: DataPaths) -> Inputs:
    """The input files (defaults from the data volume's sample/); a missing one is refused."""
    build = config.sft_source == "build"
    inputs = Inputs(
        sft=None if build else Path(config.sft_source or paths.sample_sft),
        rl=config.rl_paths(paths.sample_rl),
        known_from=config.known_from,
    )
    for source in inputs.files:
        if not source.is_file():
            raise UserError(f"input file {source} does not exist")
    return inputs


def read_mix(config: PrepConfig, sources: list[Path], data_dir: Path) -> RlMix:
    """The RL questions of the mix, each source logged under the name the marker gives it."""
    questions, summaries = read_rl_mix(
        sources, config.rl_source_limits, config.shuffle_rl, config.seed, config.max_rl_rows
    )
    # named in the marker relative to the data directory when inside it, else absolute
    named = [record_path(path, data_dir) for path in sources]
    for summary, name in zip(summaries, named, strict=True):
        summary["path"] = name
        logger.info(
            "RL source %s: %d questions %s",
            summary["path"],
            summary["questions"],
            summary["sub_categories"],
        )
    return RlMix(questions, summaries, named)


def marker(
    config: PrepConfig,
    key: str,
    inputs: Inputs,
    mix: RlMix,
    split: Split,
    sft: SftSample,
    warmup: Warmup | None,
    data_dir: Path,
) -> dict[str, Any]:
    """data/processed's marker: what it was built from and what it holds (`rows` comes last,
    once the files are written)."""
    return {
        "fingerprint": key,
        "config": config.model_dump(mode="json"),
        "inputs": {
            "sft": "build" if inputs.sft is None else record_path(inputs.sft, data_dir),
            # one path stays a string, as before; a mix is the list in order
            "rl": mix.named[0] if len(mix.named) == 1 else mix.named,
        },
        "rl_sources": mix.sources,
        "rl_sub_categories": sub_categories(mix.questions, split),
        "sft_proactive": sft.n_proactive,
        **({"warmup": warmup.marker} if warmup is not None else {}),
    }


def write_processed(
    paths: DataPaths,
    meta: dict[str, Any],
    sft: SftSample,
    records: list[dict[str, Any]],
    split: Split,
) -> None:
    """Publish data/processed: the SFT JSONL and the two RL parquet files, then the marker."""
    from proactive_rl.shared.schemas import RL_DATA, write_table

    train_rows, test_rows = [records[i] for i in split.train], [records[i] for i in split.test]
    # a full disk removes the half-written folder; the earlier data/processed stays as it was
    with staged(paths.processed, meta) as staging:
        with open(staging / paths.sft_train.name, "w", encoding="utf-8") as fh:
            for line in sft.lines:
                fh.write(line + "\n")
        n_train = write_table(train_rows, RL_DATA, staging / paths.rl_train.name)
        n_test = write_table(test_rows, RL_DATA, staging / paths.rl_test.name)
        meta["rows"] = {"sft_train": len(sft.lines), "rl_train": n_train, "rl_test": n_test}
    mix = meta["rl_sub_categories"]
    logger.info(
        "wrote %s: %d SFT conversations (%d proactive), %d RL train and %d RL test questions "
        "(train %s, test %s)",
        paths.processed,
        len(sft.lines),
        sft.n_proactive,
        n_train,
        n_test,
        mix["train"],
        mix["test"],
    )
