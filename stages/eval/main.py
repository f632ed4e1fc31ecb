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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import ROLLOUTS_FILE, DataPaths, RunPaths
from proactive_rl.shared.publish import (
    claim_outputs,
    is_stable,
    read_json,
    read_marker,
    staged,
    verified_model,
    verified_processed,
    write_json_atomic,
)
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
    config = load_config(EvalConfig, config_file, overrides, recipe or None, "eval")
    run(training_reward(config, RunPaths(run_dir)), run_dir, data_dir, resume=resume, clean=clean)


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
    from proactive_rl.engine.generation import make_backend
    from proactive_rl.shared.metrics import MetricsLogger
    from proactive_rl.shared.rewards import load_reward
    from proactive_rl.shared.schemas import RL_DATA, read_table
    from proactive_rl.stages.eval.acceptance import acceptance
    from proactive_rl.stages.eval.checkpoints import resolve_checkpoints
    from proactive_rl.stages.eval.metrics import bucket_table, by_category, calibration, summarize
    from proactive_rl.stages.eval.report import markdown, write_plots

    t0 = time.perf_counter()
    paths = RunPaths(run_dir)
    out_dir = paths.eval_dir(config.name)
    if resume and is_stable(out_dir):
        logger.info("%s is already published: nothing to do", out_dir)
        return
    outputs = [paths.eval, paths.logs("eval"), paths.config("eval").parent]
    check_writable([paths.root, *outputs], "pass another --run-dir")
    checkpoints = resolve_checkpoints(config.checkpoint_specs(), paths)
    for ckpt in checkpoints:  # all of them before sampling any: a damaged one fails in seconds
        verified_model(ckpt.path, CHECKPOINT_DAMAGED)
    if config.judge:  # checked now, not after sampling every checkpoint
        from proactive_rl.engine.model_checks import check_model_folder

        if not Path(config.judge).is_dir():
            raise UserError(f"judge={config.judge}: not a folder; give a local chat model folder")
        check_model_folder(Path(config.judge), "give another judge model folder")
    # one engine for every checkpoint (vLLM reloads weights in place); an engine that cannot
    # run here fails now, not after a model
    backend = make_backend(
        config.backend,
        config.precision,
        config.vllm,
        config.sampling.max_prompt_tokens + config.sampling.max_new_tokens,
    )
    if config.plots and importlib.util.find_spec("matplotlib") is None:
        # found out now, not after sampling every checkpoint
        raise UserError("the plots need matplotlib: pip install matplotlib, or set plots=false")
    claim_outputs([out_dir], "eval", resume, clean)
    reward_fn = load_reward(config.reward, config.reward_kwargs)
    data = DataPaths(data_dir)
    files = {"test": [data.rl_test], "train": [data.rl_train], "all": [data.rl_train, data.rl_test]}
    for split in files[config.split]:
        if not split.is_file():
            raise UserError(f"{split} does not exist: run `proactive prep` first")
    verified_processed(data)
    records = [r for f in files[config.split] for r in read_table(f, RL_DATA).to_pylist()]
    records = records[: config.max_questions]
    if not records:
        raise UserError(f"{', '.join(map(str, files[config.split]))} hold no questions")
    save_config(paths.config("eval"), config)
    logger.info(
        "eval %r: %d checkpoints (%s) x %d questions x n=%d",
        config.name,
        len(checkpoints),
        ", ".join(c.label for c in checkpoints),
        len(records),
        config.n,
    )

    metrics_log = MetricsLogger(paths.logs("eval"))
    results: list[dict[str, Any]] = []
    all_samples: list[dict[str, Any]] = []
    for index, ckpt in enumerate(checkpoints):
        started = time.perf_counter()
        samples = sample_checkpoint(ckpt.label, ckpt.path, records, config, reward_fn, backend)
        summary = summarize(samples)
        buckets = bucket_table(samples)
        cal = calibration(buckets)
        results.append(
            {
                **ckpt.describe(paths.root),
                "seconds": time.perf_counter() - started,
                "metrics": summary,
                "buckets": buckets,
                "calibration": cal,
                "categories": by_category(samples),
                **graded_views(samples, config.bootstrap_resamples, config.seed),
            }
        )
        all_samples.extend(samples)
        metrics_log.log(index, flat_metrics(config.name, ckpt.label, ckpt.spec, results[-1]))
        logger.info(
            "%s: accuracy %.3f, given attempted %.3f, F %.3f, hallucination %.3f, not attempted "
            "%.3f, proactive %.3f (hardest %s / easiest %s), format ok %.3f, reward %.3f",
            ckpt.label,
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
    by_base_difficulty(results, all_samples)
    if config.judge:
        judge_all(config, results, all_samples, backend, metrics_log)
    metrics_log.close()
    backend.close()

    report = {
        "name": config.name,
        "run_dir": str(paths.root),
        "split": config.split,
        "questions": len(records),
        "n": config.n,
        "created": time.time(),
        "seeds": seeds(config, paths),
        "settings": settings(config, paths, data),
        "checkpoints": results,
        "training": training_summary(paths, config.curve_window, config.bootstrap_resamples),
    }
    report["acceptance"] = acceptance(report)

    meta = {"rows": len(all_samples), "questions": len(records), "checkpoints": len(results)}
    with staged(out_dir, meta) as staging:
        plots = write_plots(report, staging) if config.plots else []
        report["plots"] = plots
        report["seconds"] = time.perf_counter() - t0
        write_json_atomic(staging / "report.json", report)
        (staging / "report.md").write_text(markdown(report, plots))
        with open(staging / "samples.jsonl", "w") as fh:
            for sample in all_samples:
                fh.write(json.dumps(sample) + "\n")
    for check in report["acceptance"]:
        logger.info(
            "acceptance %s: %s",
            {True: "PASS", False: "FAIL"}.get(check["passed"], "n/a"),
            check["check"],
        )
    logger.info("report: %s (and report.md, %d plots)", paths.eval_report(config.name), len(plots))


CHECKPOINT_DAMAGED = "Leave it out of checkpoints (--set checkpoints=...), or train it again"


def sample_checkpoint(
    label: str,
    model_dir: Path,
    records: list[dict[str, Any]],
    config: EvalConfig,
    reward_fn: Any,
    backend: Backend,
) -> list[dict[str, Any]]:
    """n graded samples per question from one model folder. The seeds depend only on the batch,
    so every checkpoint is sampled with the same random numbers."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from proactive_rl.shared.rewards import score_group
    from proactive_rl.shared.tags import parse_response
    from proactive_rl.stages.eval.metrics import (
        difficulty_bucket,
        grade,
        group_accuracy,
        tag_format,
    )

    backend.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir} has no chat template; eval needs a chat model")
    samples: list[dict[str, Any]] = []
    size = config.generation_batch_prompts
    for start in tqdm(range(0, len(records), size), desc=label, unit="batch", disable=None):
        chunk = records[start : start + size]
        texts = [
            tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
            for r in chunk
        ]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        groups = backend.generate(ids, config.n, config.sampling, seed=config.seed + start)
        for record, text, group in zip(chunk, texts, groups, strict=True):
            responses = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in group]
            truth = record["reward_model"]["ground_truth"]
            scored = score_group(
                reward_fn,
                text,
                responses,
                truth,
                record["data_source"],
                record["extra_info"],
                config.reward_kwargs,
            )
            for i, (response, sample, score) in enumerate(
                zip(responses, group, scored.scores, strict=True)
            ):
                parsed = parse_response(response)
                format_ok, malformed = tag_format(response)
                samples.append(
                    {
                        "checkpoint": label,
                        "question_index": record["extra_info"]["index"],
                        "sample_index": i,
                        "category": record["extra_info"].get("sub_category") or "",
                        "question": record["prompt"][-1]["content"],
                        "ground_truth": truth,
                        "response": response,
                        "formal_answer": parsed.formal,
                        "grade": (graded := grade(parsed.formal, truth)),
                        "grade_normalised": grade(parsed.formal, truth, grader="normalised"),
                        # read by prep's known_from (question_index, correct, checkpoint)
                        "correct": graded == "correct",
                        "proactive": parsed.proactive,
                        "think": parsed.think,
                        "format_ok": format_ok,
                        "malformed": malformed,
                        "truncated": sample.finish_reason == "length",
                        "response_tokens": len(sample.token_ids),
                        "reward": score,
                    }
                )
    accuracy = group_accuracy(samples)
    for s in samples:
        s["group_accuracy"] = accuracy[s["question_index"]]
        s["bucket"] = difficulty_bucket(s["group_accuracy"])
    return samples


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def judge_all(
    config: EvalConfig,
    results: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    backend: Backend,
    metrics_log: Any,
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


def graded_views(samples: list[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
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
    for bucket, row in result["buckets"].items():
        for key in ("questions", "proactive_rate", "accuracy", "not_attempted_rate"):
            record[f"bucket/{bucket}/{key}"] = row[key]
    for category, row in result["categories"].items():
        for key, value in row.items():
            record[f"category/{category}/{key}"] = value
    if result["kind"] == "policy":
        record["policy_version"] = result["number"]
    return record


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


STAGES = ("sft", "grpo", "rollout")


def seeds(config: EvalConfig, paths: RunPaths) -> dict[str, Any]:
    """Every seed that shaped the numbers: eval's own and those in the training stages' configs."""
    found: dict[str, Any] = {"eval": config.seed}
    for stage in STAGES:
        seed = _json(paths.config(stage)).get("seed")
        if seed is not None:
            found[stage] = seed
    return found


def by_base_difficulty(results: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
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


def settings(config: EvalConfig, paths: RunPaths, data: DataPaths) -> dict[str, Any]:
    """The eval config, the training stages' resolved configs and the data's prep metadata."""
    processed = read_marker(data.processed) if is_stable(data.processed) else {}
    return {
        "eval": config.model_dump(mode="json"),
        "stages": {s: _json(paths.config(s)) for s in STAGES if paths.config(s).is_file()},
        "data": {k: v for k, v in processed.items() if k != "files"},
    }


def training_summary(paths: RunPaths, window: int, resamples: int = 2000) -> dict[str, Any]:
    """The GRPO curve from logs/grpo/metrics.jsonl and the training wall times: SFT from its
    logged seconds, RL from policy 0's publication to the last logged step. The curve's change
    from the first to the last window carries a 95% interval over the prompts the windows
    scored (their rollouts), so "the reward rose" can be told apart from noise."""
    from proactive_rl.shared.metrics import read_metrics
    from proactive_rl.stages.eval.metrics import curve_summary
    from proactive_rl.stages.eval.stats import change_interval

    sft_logs = read_metrics(paths.logs("sft"))
    grpo_logs = read_metrics(paths.logs("grpo"))
    sft_seconds = max(
        (r.get("train_runtime") or r.get("seconds") or 0.0 for r in sft_logs), default=None
    )
    rl_seconds = None
    if grpo_logs and is_stable(paths.policy(0)):
        rl_seconds = grpo_logs[-1]["time"] - read_marker(paths.policy(0))["published_at"]
    curve = curve_summary(grpo_logs, window)
    if curve is not None:
        steps = curve["steps"]
        first = _group_rewards(paths, steps[: curve["window"]])
        last = _group_rewards(paths, steps[len(steps) - curve["window"] :])
        if first and last and not curve["windows_overlap"]:
            curve["reward_change"] = change_interval(first, last, resamples)
    return {
        "curve": curve,
        "sft_seconds": sft_seconds,
        "rl_seconds": rl_seconds,
    }


def _group_rewards(paths: RunPaths, steps: list[int]) -> dict[int, float]:
    """Mean reward per prompt (group_id) over the rollouts of `steps` that are still there,
    every rollout worker's part of a step included."""
    import pyarrow.parquet as pq

    from proactive_rl.shared.schedule import read_plan

    workers = read_plan(paths.plan).rollout_workers if paths.plan.is_file() else 1
    totals: dict[int, list[float]] = {}
    for step in steps:
        for folder in paths.rollout_parts(step, workers):
            if not is_stable(folder):
                continue
            table = pq.read_table(folder / ROLLOUTS_FILE, columns=["group_id", "reward"])
            rows = zip(table["group_id"].to_pylist(), table["reward"].to_pylist(), strict=True)
            for group, reward in rows:
                totals.setdefault(group, []).append(reward)
    return {group: sum(values) / len(values) for group, values in totals.items()}
