"""An optional LLM judge: a local chat model grades each answer with SimpleQA's three grades
(correct / incorrect / not attempted), for users whose questions need more than string rules.
Reported beside the rule-based graders with its agreement with the normalised one, so a reader
sees how far the cheap grader can be trusted. Any chat model folder works; a judge much larger
than the policy wants a GPU."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive_rl.stages.eval.metrics import GRADES, summarize

if TYPE_CHECKING:
    from proactive_rl.engine.generation import Backend
    from proactive_rl.stages.eval.config import EvalConfig

# Our wording of SimpleQA's rubric (Wei et al., 2024): the gold target decides, hedged wrong
# answers are incorrect, a declined answer is not attempted.
TEMPLATE = """You grade answers to factual questions against a gold target.
Reply with one letter:
A = CORRECT: the answer states the gold target (any wording, aliases, extra correct detail is
fine) and contradicts nothing in it.
B = INCORRECT: the answer states something that contradicts the gold target, even if it hedges,
or lists several candidates.
C = NOT_ATTEMPTED: the answer declines or does not commit to any answer, and contradicts nothing.

Question: {question}
Gold target: {target}
Predicted answer: {answer}

Grade (A, B or C):"""

_LETTER = re.compile(r"\b([ABC])\b|\b(CORRECT|INCORRECT|NOT_ATTEMPTED)\b")
_GRADE = {"A": "correct", "B": "incorrect", "C": "not_attempted"}
_WORD = {"CORRECT": "correct", "INCORRECT": "incorrect", "NOT_ATTEMPTED": "not_attempted"}


def parse_verdict(text: str) -> str:
    """The judge's grade, or "unparsed" when its reply names none.

    >>> parse_verdict("A"), parse_verdict(" B) it is wrong"), parse_verdict("NOT_ATTEMPTED")
    ('correct', 'incorrect', 'not_attempted')
    >>> parse_verdict("I think so")
    'unparsed'
    """
    match = _LETTER.search(text.upper())
    if match is None:
        return "unparsed"
    return _GRADE[match.group(1)] if match.group(1) else _WORD[match.group(2)]


def judge_samples(
    samples: list[dict[str, Any]], judge_dir: Path, backend: Backend, config: EvalConfig
) -> None:
    """Set each sample's `grade_judge`: the judge model (loaded into `backend`) reads the
    question, the ground truth and the formal answer, greedy-ish (temperature 0.01)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from proactive_rl.engine.generation import SamplingConfig

    backend.load(judge_dir)
    tokenizer = AutoTokenizer.from_pretrained(judge_dir)
    sampling = SamplingConfig(
        temperature=0.01,
        max_new_tokens=config.judge_max_new_tokens,
        max_prompt_tokens=config.sampling.max_prompt_tokens,
    )
    size = config.generation_batch_prompts
    for start in tqdm(range(0, len(samples), size), desc="judge", unit="batch", disable=None):
        chunk = samples[start : start + size]
        prompts = []
        for s in chunk:
            text = TEMPLATE.format(
                question=s["question"], target=s["ground_truth"], answer=s["formal_answer"]
            )
            chat = [{"role": "user", "content": text}]
            templated = tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
            prompts.append(tokenizer(templated, add_special_tokens=False)["input_ids"])
        groups = backend.generate(prompts, 1, sampling, seed=config.seed + start)
        for s, group in zip(chunk, groups, strict=True):
            reply = tokenizer.decode(group[0].token_ids, skip_special_tokens=True)
            s["judge_reply"] = reply
            s["grade_judge"] = parse_verdict(reply)


def agreement(
    samples: Sequence[Mapping[str, Any]], other: str = "grade_normalised"
) -> dict[str, Any]:
    """How often the judge and `other` give the same grade, and Cohen's kappa (agreement beyond
    chance), over the samples the judge graded.

    >>> rows = [{"grade_judge": g, "grade_normalised": h} for g, h in
    ...         [("correct", "correct"), ("incorrect", "incorrect"), ("correct", "incorrect"),
    ...          ("unparsed", "correct")]]
    >>> a = agreement(rows)
    >>> a["graded"], a["unparsed"], round(a["agreement"], 3), round(a["kappa"], 3)
    (3, 1, 0.667, 0.4)
    """
    graded = [s for s in samples if s["grade_judge"] in GRADES]
    n = len(graded)
    if n == 0:
        return {"graded": 0, "unparsed": len(samples), "agreement": None, "kappa": None}
    same = sum(s["grade_judge"] == s[other] for s in graded) / n
    chance = sum(
        (sum(s["grade_judge"] == g for s in graded) / n) * (sum(s[other] == g for s in graded) / n)
        for g in GRADES
    )
    kappa = (same - chance) / (1 - chance) if chance < 1 else 1.0
    return {"graded": n, "unparsed": len(samples) - n, "agreement": same, "kappa": kappa}


def judge_view(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The judge's rates over the samples it graded, and its agreement with the normalised
    grader."""
    graded = [{**s, "grade": s["grade_judge"]} for s in samples if s["grade_judge"] in GRADES]
    return {
        "metrics": summarize(graded) if graded else None,
        "agreement": agreement(samples),
    }
