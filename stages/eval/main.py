"""proactive eval: compare checkpoints of a run on held-out questions, n samples each, and publish
<run>/eval/<name>/ with report.json, report.md, samples.jsonl and PNG plots:

    proactive eval --run-dir checkpoints/default --set checkpoints=base,sft,rl:epochs --set n=4

docs/eval.md explains the grades, metrics and difficulty buckets.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from proactive_rl.shared.claims import claim_outputs, start_mode
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths, RunPaths
from proactive_rl.shared.publish import (
    is_stable,
    read_json,
    staged,
    verified_model,
    verified_processed,
    write_json_atomic,
)
from proactive_rl.shared.trackers import open_metrics as open_tracked
from proactive_rl.stages.common import (
    check_writable,
    config_options,
    dir_options,
    reuse_options,
    save_config,
)
from proactive_rl.stages.eval.config import EvalConfig

if TYPE_CHECKING:
    from proactive_rl.engine.generation import Backend
    from proactive_rl.shared.metrics import MetricsLogger
    from proactive_rl.shared.rewards import RewardFn
    from proactive_rl.stages.eval.checkpoints import Checkpoint
    from proactive_rl.stages.eval.sampling import EvalSample

logger = logging.getLogger(__name__)


@click.command(
    help="Evaluate checkpoints of a run (default: base, SFT and final policy, when present) on "
    "the RL test split: n samples per question, graded SimpleQA-style on the formal answer "
    "(correct / incorrect / not attempted). Writes <run-dir>/eval/<name>/ with report.json, "
    "report.md, samples.jsonl and PNG plots; see docs/eval.md.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n"
    + describe(EvalConfig, stage="eval"),
)
@dir_options
@config_options
@reuse_options
def command(run_dir, data_dir, recipe, config_file, overrides, resume, clean):
    config = resolve(run_dir, recipe, config_file, overrides)
    run(config, run_dir, data_dir, resume=resume, clean=clean)


def resolve(
    run_dir: Path, recipe: str | None, config_file: Path | None, overrides: tuple[str, ...]
) -> EvalConfig:
    """The stage's config from its options and the run's training reward, as `proactive eval`
    and `proactive preflight` read it."""
    config = load_config(EvalConfig, config_file, overrides, recipe or None, "eval")
    return training_reward(config, RunPaths(run_dir))


def outputs(config: EvalConfig, paths: RunPaths) -> list[Path]:
    """What the stage claims in the run directory (--resume / --clean act on these)."""
    return [paths.eval_dir(config.name)]


def training_reward(config: EvalConfig, paths: RunPaths) -> EvalConfig:
    """The reward the run trained with (its rollout config), for `reward` and `reward_kwargs`
    not set here: a run trained with beta 0.7 is scored with beta 0.7 unless told otherwise."""
    trained = paths.config("rollout")
    unset = [f for f in ("reward", "reward_kwargs") if f not in config.model_fields_set]
    if not unset or not trained.is_file():
        return config
    recorded = read_json(trained)
    taken = {f: recorded[f] for f in unset if f in recorded}
    if taken:
        logger.info("scoring with the run's training reward (%s): %s", trained, taken)
    return config.model_copy(update=taken)


def run(config: EvalConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    """Check everything the evaluation needs, sample and grade every checkpoint, and publish
    the report folder."""
    from proactive_rl.engine.gpus import check_gpus
    from proactive_rl.shared.rewards import load_reward
    from proactive_rl.stages.eval.report import truncation_warnings

    check_gpus()  # a GPU container that sees too few GPUs stops here, not on the CPU hours later
    t0 = time.perf_counter()
    paths = RunPaths(run_dir)
    out_dir = paths.eval_dir(config.name)
    # a restart of the launch that claimed the outputs continues them, whatever RUN_MODE says
    resume, clean = start_mode(paths.launch("eval"), "eval", resume, clean)
    if resume and is_stable(out_dir):
        logger.info("%s is already published: nothing to do", out_dir)
        return
    checkpoints = check_inputs(config, paths)
    backend = start_backend(config)
    claim_outputs(outputs(config, paths), "eval", resume, clean, paths.launch("eval"))
    reward_fn = load_reward(config.reward, config.reward_kwargs)
    data = DataPaths(data_dir)
    records = read_questions(config, data)
    save_config(paths.config("eval"), config)
    logger.info(
        "eval %r: %d checkpoints (%s) x %d questions x n=%d",
        config.name,
        len(checkpoints),
        ", ".join(c.label for c in checkpoints),
        len(records),
        config.n,
    )
    metrics_log = open_tracked(config.tracking, paths, "eval", config)
    evaluated = evaluate(config, paths, checkpoints, records, reward_fn, backend, metrics_log)
    report = build_report(config, paths, data, len(records), evaluated.results)
    plots = publish(report, evaluated.samples, out_dir, config.plots, t0)
    # the report's tables (report.md, report.json) and plots, beside the per-checkpoint numbers
    reported = [out_dir / "report.md", out_dir / "report.json", *(out_dir / p for p in plots)]
    metrics_log.files(reported, "report")
    metrics_log.close()
    for check in report["acceptance"]:
        logger.info(
            "acceptance %s: %s",
            {True: "PASS", False: "FAIL"}.get(check["passed"], "n/a"),
            check["check"],
        )
    for warning in truncation_warnings(report):
        logger.warning("%s", warning)
    logger.info("report: %s (and report.md, %d plots)", paths.eval_report(config.name), len(plots))


CHECKPOINT_DAMAGED = "Leave it out of checkpoints (--set checkpoints=...), or train it again"


def check_inputs(config: EvalConfig, paths: RunPaths) -> list[Checkpoint]:
    """The checkpoints to compare, each verified, and the judge model checked: all of it before
    sampling any, so a damaged checkpoint or a wrong judge folder fails in seconds."""
    from proactive_rl.stages.eval.checkpoints import resolve_checkpoints

    written = [paths.eval, paths.logs("eval"), paths.config("eval").parent]
    written.append(paths.launch("eval").parent)
    check_writable([paths.root, *written], "pass another --run-dir")
    checkpoints = resolve_checkpoints(config.checkpoint_specs(), paths)
    for ckpt in checkpoints:
        verified_model(ckpt.path, CHECKPOINT_DAMAGED)
    if config.judge:
        check_judge(config.judge)
    return checkpoints


def check_judge(judge: str) -> None:
    """The judge model is a readable local model folder."""
    from proactive_rl.engine.model_checks import check_model_folder

    if not Path(judge).is_dir():
        raise UserError(f"judge={judge}: not a folder; give a local chat model folder")
    check_model_folder(Path(judge), "give another judge model folder")


def start_backend(config: EvalConfig) -> Backend:
    """One engine for every checkpoint (vLLM reloads weights in place): an engine that cannot
    run here fails now, not after a model, and so do plots without matplotlib."""
    from proactive_rl.engine.generation import make_backend

    backend = make_backend(
        config.backend,
        config.precision,
        config.vllm,
        config.sampling.max_prompt_tokens + config.sampling.max_new_tokens,
    )
    if config.plots and importlib.util.find_spec("matplotlib") is None:
        raise UserError("the plots need matplotlib: pip install matplotlib, or set plots=false")
    return backend


def read_questions(config: EvalConfig, data: DataPaths) -> list[dict[str, Any]]:
    """The RL rows of the configured split (verified), the first max_questions of them."""
    from proactive_rl.shared.schemas import RL_DATA, read_table

    files = {"test": [data.rl_test], "train": [data.rl_train], "all": [data.rl_train, data.rl_test]}
    for split in files[config.split]:
        if not split.is_file():
            raise UserError(f"{split} does not exist: run `proactive prep` first")
    verified_processed(data)
    records = [r for f in files[config.split] for r in read_table(f, RL_DATA).to_pylist()]
    records = records[: config.max_questions]
    if not records:
        raise UserError(f"{', '.join(map(str, files[config.split]))} hold no questions")
    return records


@dataclass(frozen=True)
class CheckpointEval:
    """One checkpoint's entry in report.json and its graded samples."""

    result: dict[str, Any]
    samples: list[EvalSample]


@dataclass
class Evaluated:
    """Every checkpoint's report entry, in order, and all their samples."""

    results: list[dict[str, Any]] = field(default_factory=list)
    samples: list[EvalSample] = field(default_factory=list)


def evaluate(
    config: EvalConfig,
    paths: RunPaths,
    checkpoints: list[Checkpoint],
    records: list[dict[str, Any]],
    reward_fn: RewardFn,
    backend: Backend,
    metrics_log: MetricsLogger,
) -> Evaluated:
    """Sample, grade and summarise every checkpoint (one metrics record each), then the views
    across them: difficulty by the base model and the LLM judge. Closes the backend."""
    done = Evaluated()
    for ckpt in checkpoints:
        one = evaluate_checkpoint(ckpt, paths.root, records, config, reward_fn, backend)
        done.results.append(one.result)
        done.samples.extend(one.samples)
        log_checkpoint(ckpt.label, one.result)
    by_base_difficulty(done.results, done.samples)
    base_frontier(done.results, done.samples)
    against_optimum(config, reward_fn, done)
    # logged once the views across checkpoints (base difficulty, the optimum) are in
    for index, (ckpt, result) in enumerate(zip(checkpoints, done.results, strict=True)):
        metrics_log.log(index, flat_metrics(config.name, ckpt.label, ckpt.spec, result))
    if config.judge:
        judge_all(config, done.results, done.samples, backend, metrics_log)
    backend.close()
    return done


def base_frontier(results: list[dict[str, Any]], samples: Sequence[Mapping[str, Any]]) -> None:
    """The oracle frontier of the base model's knowledge (stages/eval/frontier.py): what
    hedging alone could reach on these questions, in the base checkpoint's entry; and every
    checkpoint's self-consistency frontier (hedging by its own samples' agreement), against the
    base's accuracy where a base checkpoint is evaluated."""
    from proactive_rl.stages.eval.frontier import oracle_frontier, self_consistency_frontier

    by_label: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in samples:
        by_label[s["checkpoint"]].append(s)
    base_accuracy = None
    for result in results:
        if result["kind"] == "base":
            result["oracle_frontier"] = oracle_frontier(by_label[result["label"]])
            base_accuracy = {g: v["base_accuracy"] for g, v in result["oracle_frontier"].items()}
    for result in results:
        own = by_label[result["label"]]
        result["consistency_frontier"] = self_consistency_frontier(own, base_accuracy)


def against_optimum(config: EvalConfig, reward_fn: RewardFn, done: Evaluated) -> None:
    """Each checkpoint against its reward's best action per question (stages/eval/optimum.py),
    graded as the reward grades (its `grader` kwarg)."""
    from proactive_rl.shared.rewards import used_kwargs
    from proactive_rl.stages.eval.optimum import action_table, by_checkpoint

    table = action_table(reward_fn, config.reward_kwargs, config.n)
    normalised = config.reward_kwargs.get("grader") == "normalised"
    by_checkpoint(done.results, done.samples, table, "grade_normalised" if normalised else "grade")
    optimum = done.results[0]["optimum"] if done.results else {}
    logger.info(
        "reward %s %s: answering pays from an accuracy of %s (group of %d)",
        config.reward,
        json.dumps(used_kwargs(config.reward, config.reward_kwargs), sort_keys=True),
        "-" if optimum.get("threshold") is None else f"{optimum['threshold']:.3f}",
        config.n,
    )


def evaluate_checkpoint(
    ckpt: Checkpoint,
    root: Path,
    records: list[dict[str, Any]],
    config: EvalConfig,
    reward_fn: RewardFn,
    backend: Backend,
) -> CheckpointEval:
    """One checkpoint's samples and its report entry: rates, calibration buckets, categories
    and the graded views."""
    from proactive_rl.stages.eval.metrics import bucket_table, by_category, calibration, summarize
    from proactive_rl.stages.eval.sampling import sample_checkpoint

    started = time.perf_counter()
    samples, kept = sample_checkpoint(ckpt.label, ckpt.path, records, config, reward_fn, backend)
    summary = summarize(samples)
    buckets = bucket_table(samples)
    cal = calibration(buckets)
    result = {
        **ckpt.describe(root),
        "seconds": time.perf_counter() - started,
        # responses an earlier eval sampled (sample_cache), graded here with this reward
        "responses_kept_in": None if kept is None else str(kept),
        "metrics": summary,
        "buckets": buckets,
        "calibration": cal,
        "categories": by_category(samples),
        **graded_views(samples, config.bootstrap_resamples, config.seed),
    }
    return CheckpointEval(result, samples)


def log_checkpoint(label: str, result: dict[str, Any]) -> None:
    """The log line of one evaluated checkpoint: its headline rates."""
    summary, cal = result["metrics"], result["calibration"]
    logger.info(
        "%s: accuracy %.3f, given attempted %.3f, F %.3f, hallucination %.3f, not attempted "
        "%.3f, proactive %.3f (hardest %s / easiest %s), format ok %.3f, reward %.3f",
        label,
        summary["accuracy"],
        summary["accuracy_given_attempted"],
        summary["f_score"],
        summary["hallucination_rate"],
        summary["not_attempted_rate"],
        summary["proactive_rate"],
        _pct(cal["hardest_proactive_rate"]),
        _pct(cal["easiest_proactive_rate"]),
        summary["format_rate"],
        summary["mean_reward"],
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def build_report(
    config: EvalConfig,
    paths: RunPaths,
    data: DataPaths,
    questions: int,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """report.json's content before publishing (plots and wall time are added then), with the
    acceptance checks computed from it."""
    from proactive_rl.stages.eval.acceptance import acceptance
    from proactive_rl.stages.eval.recorded import seeds, settings, training_summary

    report = {
        "name": config.name,
        "run_dir": str(paths.root),
        "split": config.split,
        "questions": questions,
        "n": config.n,
        "created": time.time(),
        "seeds": seeds(config, paths),
        "settings": settings(config, paths, data),
        "checkpoints": results,
        "training": training_summary(paths, config.curve_window, config.bootstrap_resamples),
    }
    report["acceptance"] = acceptance(report)
    return report


def publish(
    report: dict[str, Any], samples: list[EvalSample], out_dir: Path, plots: bool, t0: float
) -> list[str]:
    """Stage and publish the report folder: plots, report.json, report.md and samples.jsonl;
    returns the plot file names."""
    from proactive_rl.stages.eval.report import markdown

    meta = {
        "rows": len(samples),
        "questions": report["questions"],
        "checkpoints": len(report["checkpoints"]),
    }
    with staged(out_dir, meta) as staging:
        written = write_plots(report, staging) if plots else []
        report["plots"] = written
        report["seconds"] = time.perf_counter() - t0
        write_json_atomic(staging / "report.json", report)
        (staging / "report.md").write_text(markdown(report, written))
        with open(staging / "samples.jsonl", "w") as fh:
            for sample in samples:
                fh.write(json.dumps(sample) + "\n")
    return written


def write_plots(report: dict[str, Any], folder: Path) -> list[str]:
    """The PNG plots into `folder`; their file names."""
    from proactive_rl.stages.eval.plots import write_plots  # matplotlib: only with plots on

    return write_plots(report, folder)


def judge_all(
    config: EvalConfig,
    results: list[dict[str, Any]],
    samples: list[EvalSample],
    backend: Backend,
    metrics_log: MetricsLogger,
) -> None:
    """The LLM judge over every checkpoint's samples (one judge load), its view per checkpoint
    in the report and the metrics log."""
    from proactive_rl.stages.eval.judge import judge_samples, judge_view

    judge_samples(samples, Path(config.judge), backend, config)
    for index, result in enumerate(results, start=len(results)):
        view = judge_view([s for s in samples if s["checkpoint"] == result["label"]])
        result["judge"] = view
        record = {"report": config.name, "checkpoint": result["label"]}
        record.update({f"judge/{k}": v for k, v in (view["metrics"] or {}).items()})
        record.update({f"judge/{k}": v for k, v in view["agreement"].items()})
        metrics_log.log(index, record)


def graded_views(samples: Sequence[Mapping[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """The report's uncertainty and second-grader views of one checkpoint's samples: 95%
    intervals, the normalised grader's rates (beside the recipe's substring rule) and the
    risk-coverage curve."""
    from proactive_rl.stages.eval.metrics import summarize
    from proactive_rl.stages.eval.stats import bootstrap_intervals, risk_coverage

    normalised = [{**s, "grade": s["grade_normalised"]} for s in samples]
    return {
        "intervals": bootstrap_intervals(samples, resamples=resamples, seed=seed),
        "metrics_normalised": summarize(normalised),
        "intervals_normalised": bootstrap_intervals(normalised, resamples=resamples, seed=seed),
        "risk_coverage": risk_coverage(samples),
    }


def flat_metrics(name: str, label: str, spec: str, result: dict[str, Any]) -> dict[str, Any]:
    """One metrics.jsonl record per checkpoint: every number of its report entry."""
    record: dict[str, Any] = {"report": name, "checkpoint": label, "spec": spec}
    record.update({f"eval/{k}": v for k, v in result["metrics"].items()})
    record.update({f"calibration/{k}": v for k, v in result["calibration"].items()})
    record.update({f"eval_normalised/{k}": v for k, v in result["metrics_normalised"].items()})
    for view in ("intervals", "intervals_normalised"):
        for key, (low, high) in result[view].items():
            record[f"{view}/{key}/low"], record[f"{view}/{key}/high"] = low, high
    record["risk_coverage/area"] = result["risk_coverage"]["area"]
    record.update({f"optimum/{k}": v for k, v in result["optimum"].items() if v is not None})
    for grader, view in result.get("oracle_frontier", {}).items():
        record.update({f"oracle_frontier/{grader}/{k}": v for k, v in view.items()})
    for grader, view in result.get("consistency_frontier", {}).items():
        scalars = {k: v for k, v in view.items() if k != "thresholds"}
        record.update({f"consistency_frontier/{grader}/{k}": v for k, v in scalars.items()})
    for bucket, row in result["buckets"].items():
        for key in ("questions", "proactive_rate", "accuracy", "not_attempted_rate"):
            record[f"bucket/{bucket}/{key}"] = row[key]
    for category, row in result["categories"].items():
        for key, value in row.items():
            record[f"category/{category}/{key}"] = value
    if result["kind"] == "policy":
        record["policy_version"] = result["number"]
    return record


def by_base_difficulty(results: list[dict[str, Any]], samples: Sequence[Mapping[str, Any]]) -> None:
    """Each checkpoint's calibration with difficulty taken from the base model on the same
    questions: does a trained model hedge where the base fails and answer where it knows?
    (Its own difficulty cannot tell that once it hedges on everything.) Only with a base."""
    from proactive_rl.stages.eval.metrics import bucket_table, calibration, group_accuracy

    base = next((r for r in results if r["kind"] == "base"), None)
    if base is None:
        return
    difficulty = group_accuracy([s for s in samples if s["checkpoint"] == base["label"]])
    for result in results:
        own = [s for s in samples if s["checkpoint"] == result["label"]]
        result["buckets_by_base"] = bucket_table(own, difficulty)
        result["calibration_by_base"] = calibration(result["buckets_by_base"])
