"""Sampling and grading one checkpoint: n responses per question, each graded, tagged and
scored into one row of samples.jsonl. Imported only from eval's run(); transformers and tqdm
are still imported inside sample_checkpoint, after the run's checks have passed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.rewards import RewardFn, score_group
from proactive_rl.shared.tags import parse_response, tag_format
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.metrics import (
    Grade,
    difficulty_bucket,
    grade,
    group_accuracy,
)

if TYPE_CHECKING:
    from proactive_rl.engine.generation import Backend, Sample

logger = logging.getLogger(__name__)


class EvalSample(TypedDict):
    """One row of samples.jsonl (keys in the order written)."""

    checkpoint: str
    question_index: int
    sample_index: int
    category: str
    question: str
    ground_truth: str
    response: str
    formal_answer: str
    grade: Grade
    grade_normalised: Grade
    correct: bool  # read by prep's known_from (question_index, correct, checkpoint)
    proactive: bool
    think: bool
    format_ok: bool
    malformed: bool
    truncated: bool
    response_tokens: int
    reward: float
    # added once every sample of the checkpoint is graded
    group_accuracy: NotRequired[float]
    bucket: NotRequired[str]


def sample_checkpoint(
    label: str,
    model_dir: Path,
    records: list[dict[str, Any]],
    config: EvalConfig,
    reward_fn: RewardFn,
    backend: Backend,
) -> tuple[list[EvalSample], Path | None]:
    """n graded samples per question from one model folder, graded with `reward_fn`, and the
    sample_cache file their responses were kept in, when they were sampled by an earlier eval."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir} has no chat template; eval needs a chat model")
    texts = [
        tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
        for r in records
    ]
    groups, kept = kept_or_sampled(label, model_dir, records, texts, tokenizer, config, backend)
    samples: list[EvalSample] = []
    for record, text, group in zip(records, texts, groups, strict=True):
        responses = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in group]
        samples += graded_group(label, record, text, responses, group, reward_fn, config)
    return with_difficulty(samples), kept


def kept_or_sampled(
    label: str,
    model_dir: Path,
    records: list[dict[str, Any]],
    texts: list[str],
    tokenizer: Any,
    config: EvalConfig,
    backend: Backend,
) -> tuple[list[list[Sample]], Path | None]:
    """Each question's n responses: those kept in config.sample_cache for this very model,
    questions and sampling (stages/eval/sample_cache.py; with the file), else sampled now (and
    kept)."""
    from proactive_rl.stages.eval.sample_cache import (
        cache_file,
        cache_key,
        load_groups,
        save_groups,
    )

    if config.sample_cache is None:
        return sampled(label, model_dir, texts, tokenizer, config, backend), None
    path = cache_file(
        Path(config.sample_cache), cache_key(model_dir, records, config, backend.name)
    )
    groups = load_groups(path, len(records))
    if groups is not None:
        logger.info(
            "%s: %d questions' responses kept in %s, graded again", label, len(groups), path
        )
        return groups, path
    groups = sampled(label, model_dir, texts, tokenizer, config, backend)
    save_groups(path, groups, label, model_dir)
    return groups, None


def sampled(
    label: str,
    model_dir: Path,
    texts: list[str],
    tokenizer: Any,
    config: EvalConfig,
    backend: Backend,
) -> list[list[Sample]]:
    """n responses per prompt from the model. The seeds depend only on the batch, so every
    checkpoint is sampled with the same random numbers."""
    from tqdm import tqdm

    backend.load(model_dir)
    groups: list[list[Sample]] = []
    size = config.generation_batch_prompts
    for start in tqdm(range(0, len(texts), size), desc=label, unit="batch", disable=None):
        ids = [
            tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + size]
        ]
        groups += backend.generate(ids, config.n, config.sampling, seed=config.seed + start)
    return groups


def graded_group(
    label: str,
    record: dict[str, Any],
    prompt: str,
    responses: list[str],
    group: list[Sample],
    reward_fn: RewardFn,
    config: EvalConfig,
) -> list[EvalSample]:
    """The rows of one question's n responses, scored together as the reward scores a group."""
    scored = score_group(
        reward_fn,
        prompt,
        responses,
        record["reward_model"]["ground_truth"],
        record["data_source"],
        record["extra_info"],
        config.reward_kwargs,
    )
    return [
        sample_row(label, record, i, response, sample, score)
        for i, (response, sample, score) in enumerate(
            zip(responses, group, scored.scores, strict=True)
        )
    ]


def sample_row(
    label: str, record: dict[str, Any], index: int, response: str, sample: Sample, reward: float
) -> EvalSample:
    """One graded response: both graders' grades of its formal answer and its tag format."""
    truth = record["reward_model"]["ground_truth"]
    parsed = parse_response(response)
    format_ok, malformed = tag_format(response)
    graded = grade(parsed.formal, truth)
    return {
        "checkpoint": label,
        "question_index": record["extra_info"]["index"],
        "sample_index": index,
        "category": record["extra_info"].get("sub_category") or "",
        "question": record["prompt"][-1]["content"],
        "ground_truth": truth,
        "response": response,
        "formal_answer": parsed.formal,
        "grade": graded,
        "grade_normalised": grade(parsed.formal, truth, grader="normalised"),
        "correct": graded == "correct",
        "proactive": parsed.proactive,
        "think": parsed.think,
        "format_ok": format_ok,
        "malformed": malformed,
        "truncated": sample.finish_reason == "length",
        "response_tokens": len(sample.token_ids),
        "reward": reward,
    }


def with_difficulty(samples: list[EvalSample]) -> list[EvalSample]:
    """Each sample with its question's group accuracy (over this checkpoint's samples) and
    difficulty bucket, in place."""
    accuracy = group_accuracy(samples)
    for s in samples:
        s["group_accuracy"] = accuracy[s["question_index"]]
        s["bucket"] = difficulty_bucket(s["group_accuracy"])
    return samples
