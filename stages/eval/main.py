"""proactive eval: sample n responses per held-out question from a checkpoint and write
<run>/eval/<name>/report.json (+ samples.jsonl):

    proactive eval --run-dir checkpoints/default --set checkpoint=final --set n=4
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from proactive_rl.common import config_options, dir_options, reuse_options, save_config
from proactive_rl.eval.config import EvalConfig
from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import EPOCH_RE, DataPaths, RunPaths, numbered_children
from proactive_rl.shared.publish import (
    claim_outputs,
    is_stable,
    publish_dir,
    read_marker,
    staging_dir,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


@click.command(
    help="Evaluate a checkpoint on the RL test split: n samples per question, scored on the "
    "formal answer (tags removed). Writes <run-dir>/eval/<name>/report.json with accuracy, "
    "proactive rate, think/proactive tag rates and mean reward, plus samples.jsonl.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n" + describe(EvalConfig),
)
@dir_options
@config_options
@reuse_options
def command(run_dir, data_dir, config_file, overrides, resume, clean):
    config = load_config(EvalConfig, config_file, overrides)
    run(config, run_dir, data_dir, resume=resume, clean=clean)


def resolve_checkpoint(spec: str, paths: RunPaths) -> tuple[str, Path]:
    """(default report name, model folder) for a checkpoint spec."""
    if spec == "final":
        stable = [(v, f) for v, f in numbered_children(paths.policies) if is_stable(f)]
        if not stable:
            raise UserError(f"checkpoint='final' but {paths.policies} has no published policy")
        version, folder = stable[-1]
        return f"policy_{version:06d}", folder
    if spec.startswith("policy:"):
        version = int(spec.split(":", 1)[1])
        folder = paths.policy(version)
        if not is_stable(folder):
            raise UserError(f"policy version {version} is not published in {paths.policies}")
        return f"policy_{version:06d}", folder
    if spec == "sft":
        epochs = [f for _, f in numbered_children(paths.sft, EPOCH_RE) if is_stable(f)]
        if not epochs:
            raise UserError(f"checkpoint='sft' but {paths.sft} has no published epoch")
        return f"sft_{epochs[-1].name}", epochs[-1]
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise UserError(
            f"checkpoint {spec!r} is neither final/sft/policy:N nor a model folder with config.json"
        )
    return folder.name, folder


def run(config: EvalConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from proactive_rl.rollout.backend import BACKENDS
    from proactive_rl.shared.rewards import is_correct, load_reward, score_group
    from proactive_rl.shared.schemas import RL_DATA, read_table
    from proactive_rl.shared.tags import parse_response

    paths = RunPaths(run_dir)
    default_name, model_dir = resolve_checkpoint(config.checkpoint, paths)
    name = config.name or default_name
    out_dir = paths.eval_report(name).parent
    if resume and is_stable(out_dir):
        logger.info("%s is already published: nothing to do", out_dir)
        return
    claim_outputs([out_dir], "eval", resume, clean)
    reward_fn = load_reward(config.reward, config.reward_kwargs)
    split = DataPaths(data_dir).rl_test if config.split == "test" else DataPaths(data_dir).rl_train
    records = read_table(split, RL_DATA).to_pylist()[: config.max_questions]
    if not records:
        raise UserError(f"{split} has no questions")
    save_config(paths.config("eval"), config)

    t0 = time.perf_counter()
    backend = BACKENDS["transformers"](config.precision)
    backend.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples: list[dict[str, Any]] = []
    size = config.generation_batch_prompts
    for start in tqdm(range(0, len(records), size), desc="eval", unit="batch", disable=None):
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
            for response, sample, score in zip(responses, group, scored.scores, strict=True):
                parsed = parse_response(response)

                samples.append(
                    {
                        "question_index": record["extra_info"]["index"],
                        "question": record["prompt"][-1]["content"],
                        "ground_truth": truth,
                        "response": response,
                        "formal_answer": parsed.formal,
                        "correct": is_correct(parsed.formal, truth),
                        "proactive": parsed.proactive,
                        "think": parsed.think,
                        "truncated": sample.finish_reason == "length",
                        "reward": score,
                    }
                )
        logger.info("evaluated %d/%d questions", min(start + size, len(records)), len(records))

    report = summarize(samples)
    report.update(
        {
            "checkpoint": str(model_dir),
            "checkpoint_spec": config.checkpoint,
            "split": config.split,
            "questions": len(records),
            "n": config.n,
            "seconds": time.perf_counter() - t0,
            "config": config.model_dump(mode="json"),
        }
    )
    if is_stable(model_dir):
        report["checkpoint_marker"] = {
            k: v for k, v in read_marker(model_dir).items() if k != "files"
        }
    staging = staging_dir(out_dir)
    write_json_atomic(staging / "report.json", report)
    with open(staging / "samples.jsonl", "w") as fh:
        for sample in samples:
            fh.write(json.dumps(sample) + "\n")
    publish_dir(staging, out_dir, {"rows": len(samples), "questions": len(records)})
    logger.info(
        "%s: accuracy %.3f, proactive rate %.3f, think rate %.3f, mean reward %.3f -> %s",
        name,
        report["accuracy"],
        report["proactive_rate"],
        report["think_rate"],
        report["mean_reward"],
        paths.eval_report(name),
    )


def summarize(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Rates over all samples. accuracy is graded on the formal answer (tags removed)."""
    count = len(samples)

    def rate(key: str) -> float:
        return sum(float(s[key]) for s in samples) / count

    both = sum(s["think"] and s["proactive"] for s in samples) / count
    return {
        "samples": count,
        "accuracy": rate("correct"),
        "proactive_rate": rate("proactive"),
        "think_rate": rate("think"),
        "think_and_proactive_rate": both,
        "truncated_rate": rate("truncated"),
        "mean_reward": rate("reward"),
    }
