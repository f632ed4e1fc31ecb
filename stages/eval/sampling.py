"""Sampling and grading one checkpoint: n responses per question, each graded, tagged and
scored into one row of samples.jsonl. Imported only from eval's run(); transformers and tqdm
are still imported inside sample_checkpoint, after the run's checks have passed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.rewards import RewardFn, score_group
from proactive_rl.shared.tags import parse_response
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.metrics import (
    Grade,
    difficulty_bucket,
    grade,
    group_accuracy,
    tag_format,
)

if TYPE_CHECKING:
    from proactive_rl.engine.generation import Backend, Sample


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
) -> list[EvalSample]:
    """n graded samples per question from one model folder. The seeds depend only on the batch,
    so every checkpoint is sampled with the same random numbers."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    backend.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir} has no chat template; eval needs a chat model")
    samples: list[EvalSample] = []
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
            samples += graded_group(label, record, text, responses, group, reward_fn, config)
    return with_difficulty(samples)


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
