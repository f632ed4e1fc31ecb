"""Pure grading and aggregation for the evaluation report (no I/O, no torch).

Grades follow SimpleQA (Wei et al., 2024), with rules instead of an LLM grader:

- correct: the ground truth is in the formal answer (`grading.is_correct`, the rule training
  rewards use by default, so eval and training agree on what "correct" means; the normalised
  grader of `shared/grading.py` is reported beside it);
- not_attempted: otherwise, when the formal answer is empty or only hedges (`is_hedge`);
- incorrect: everything else, i.e. a concrete answer that is wrong (a hallucination).

Only the formal answer (tags removed, `tags.formal_answer`) is graded, so a response with a
proactive block followed by "Maybe 1912." attempted an answer, while one followed by
"I don't know the exact year." did not. docs/eval.md explains every metric.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from proactive_rl.shared.grading import grader as grader_fn

Grade = Literal["correct", "incorrect", "not_attempted"]
GRADES: tuple[Grade, ...] = ("correct", "incorrect", "not_attempted")

# Phrases that, on their own, decline to answer. Matched case-insensitively on word boundaries
# (curly apostrophes normalised). Kept short on purpose: every phrase is a way to say "I do not
# know", never a word that can be part of a concrete answer.
HEDGE_PHRASES: tuple[str, ...] = (
    "don't know",
    "do not know",
    "not sure",
    "unsure",
    "not certain",
    "uncertain",
    "i cannot",
    "i can't",
    "i can not",
    "unable to",
    "not able to",
    "no information",
    "no reliable",
    "don't have",
    "do not have",
    "no idea",
    "not aware",
    "no record",
    "please check",
    "please verify",
    "reliable source",
)
_HEDGE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in HEDGE_PHRASES) + r")\b")
# Clauses end at sentence punctuation, a newline, or a contrast word: "I'm not sure, but it is
# 1912" has a hedge clause and an answer clause. Commas do not split, so "I have no reliable
# information about this village, its library, or its history" stays one hedge clause.
_CLAUSE_SPLIT = re.compile(r"[.!?;\n]+|\b(?:but|however|although|though)\b")
_WORDS = re.compile(r"[\w']+")
# A clause made only of these says nothing either way ("Sorry." / "Unfortunately,") and is
# ignored, so "Sorry. I don't know." is a hedge while "Sorry, it is Lyon." is an answer.
FILLER_WORDS = frozenset(
    "sorry unfortunately apologies i apologize hmm well ok okay honestly so".split()
)

# Difficulty buckets by the checkpoint's own group accuracy on a question (fraction of its n
# samples that are correct), hardest first.
BUCKETS: tuple[str, ...] = ("hardest", "hard", "easy", "easiest")
BUCKET_RANGES: dict[str, str] = {
    "hardest": "accuracy = 0",
    "hard": "0 < accuracy < 0.5",
    "easy": "0.5 <= accuracy < 1",
    "easiest": "accuracy = 1",
}


def is_hedge(formal: str) -> bool:
    """Whether a formal answer declines to answer: empty, or every clause holds a hedge phrase.

    A clause is a piece between sentence punctuation, newlines and the words but / however /
    although / though; pieces without words, or with only FILLER_WORDS, are ignored.

    >>> is_hedge(""), is_hedge("I don't know."), is_hedge("I DON’T KNOW the exact year.")
    (True, True, True)
    >>> is_hedge("I'm not sure. Please check a reliable source.")
    True
    >>> is_hedge("I'm not sure, but I think it was 1912."), is_hedge("Maybe 1912.")
    (False, False)
    >>> is_hedge("Paris. I am not certain though")
    False
    """
    text = formal.lower().replace("\u2019", "'")
    clauses = [c for c in _CLAUSE_SPLIT.split(text) if set(_WORDS.findall(c)) - FILLER_WORDS]
    return all(_HEDGE.search(c) for c in clauses)


def grade(formal: str, ground_truth: str, grader: str = "substring") -> Grade:
    """SimpleQA-style grade of one formal answer. Correct wins over a hedge that names the truth.

    >>> grade("Paris", "paris"), grade("Lyon", "paris"), grade("I don't know.", "paris")
    ('correct', 'incorrect', 'not_attempted')
    >>> grade("I don't know if it is Paris.", "paris")
    'correct'
    >>> grade("In 2012", "2"), grade("In 2012", "2", grader="normalised")
    ('correct', 'incorrect')
    """
    if grader_fn(grader)(formal, ground_truth):
        return "correct"
    if is_hedge(formal):
        return "not_attempted"
    return "incorrect"


def f_score(accuracy: float, accuracy_given_attempted: float) -> float:
    """Harmonic mean of overall accuracy and accuracy given attempted (SimpleQA's F-score).

    >>> f_score(0.5, 1.0), f_score(0.0, 0.0), f_score(1.0, 1.0)
    (0.6666666666666666, 0.0, 1.0)
    """
    total = accuracy + accuracy_given_attempted
    return 2 * accuracy * accuracy_given_attempted / total if total > 0 else 0.0


def difficulty_bucket(group_accuracy: float) -> str:
    """The bucket of a question with this group accuracy (see BUCKET_RANGES).

    >>> [difficulty_bucket(a) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    ['hardest', 'hard', 'easy', 'easy', 'easiest']
    """
    if not 0.0 <= group_accuracy <= 1.0:
        raise ValueError(f"group accuracy {group_accuracy} is outside [0, 1]")
    if group_accuracy == 0.0:
        return "hardest"
    if group_accuracy < 0.5:
        return "hard"
    if group_accuracy < 1.0:
        return "easy"
    return "easiest"


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def summarize(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rates over the graded samples of one checkpoint.

    Each sample needs: grade, proactive, think, format_ok, malformed, truncated, reward,
    response_tokens. Rates are fractions of all samples except accuracy_given_attempted
    (0 when nothing was attempted).

    >>> rows = [dict(grade=g, proactive=p, think=True, format_ok=True, malformed=False,
    ...              truncated=False, reward=1.0, response_tokens=10)
    ...         for g, p in [("correct", False), ("incorrect", False), ("not_attempted", True),
    ...                      ("not_attempted", True)]]
    >>> s = summarize(rows)
    >>> s["accuracy"], s["accuracy_given_attempted"], s["hallucination_rate"], s["f_score"]
    (0.25, 0.5, 0.25, 0.3333333333333333)
    """
    count = len(samples)
    if count == 0:
        raise ValueError("no samples to summarize")
    counts = {g: sum(s["grade"] == g for s in samples) for g in GRADES}
    attempted = count - counts["not_attempted"]
    accuracy = counts["correct"] / count
    given = counts["correct"] / attempted if attempted else 0.0

    def rate(key: str) -> float:
        return sum(bool(s[key]) for s in samples) / count

    return {
        "samples": count,
        "correct": counts["correct"],
        "incorrect": counts["incorrect"],
        "not_attempted": counts["not_attempted"],
        "accuracy": accuracy,
        "not_attempted_rate": counts["not_attempted"] / count,
        "accuracy_given_attempted": given,
        "f_score": f_score(accuracy, given),
        "hallucination_rate": counts["incorrect"] / count,
        # TruthRL's truthfulness with weights (1, 0, 1): a hedge is worth more than a wrong answer
        "truthfulness": (counts["correct"] - counts["incorrect"]) / count,
        "proactive_rate": rate("proactive"),
        "think_rate": rate("think"),
        "format_rate": rate("format_ok"),
        "malformed_rate": rate("malformed"),
        "truncated_rate": rate("truncated"),
        "mean_reward": statistics.fmean(float(s["reward"]) for s in samples),
        "mean_response_tokens": statistics.fmean(s["response_tokens"] for s in samples),
    }


def group_accuracy(samples: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per question (by question_index): the fraction of its samples graded correct.

    >>> group_accuracy([{"question_index": 3, "grade": "correct"},
    ...                 {"question_index": 3, "grade": "incorrect"}])
    {3: 0.5}
    """
    groups: dict[int, list[bool]] = {}
    for s in samples:
        groups.setdefault(s["question_index"], []).append(s["grade"] == "correct")
    return {q: sum(v) / len(v) for q, v in groups.items()}


def bucket_table(
    samples: Sequence[Mapping[str, Any]], difficulty: Mapping[int, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Calibration: per difficulty bucket, questions, samples, proactive rate, accuracy and
    not-attempted rate. Difficulty is the group accuracy of these same samples, or per question
    the accuracy in `difficulty` (e.g. the base model's); rates of an empty bucket are None.

    >>> rows = [{"question_index": q, "grade": g, "proactive": p}
    ...         for q, g, p in [(0, "incorrect", True), (0, "not_attempted", True),
    ...                         (1, "correct", False), (1, "correct", True)]]
    >>> t = bucket_table(rows)
    >>> t["hardest"]["proactive_rate"], t["easiest"]["proactive_rate"], t["hard"]["questions"]
    (1.0, 0.5, 0)
    """
    acc = group_accuracy(samples) if difficulty is None else difficulty
    table: dict[str, dict[str, Any]] = {}
    for name in BUCKETS:
        rows = [s for s in samples if difficulty_bucket(acc[s["question_index"]]) == name]
        table[name] = {
            "range": BUCKET_RANGES[name],
            "questions": len({s["question_index"] for s in rows}),
            "samples": len(rows),
            "proactive_rate": _mean(float(s["proactive"]) for s in rows),
            "accuracy": _mean(float(s["grade"] == "correct") for s in rows),
            "not_attempted_rate": _mean(float(s["grade"] == "not_attempted") for s in rows),
        }
    return table


def calibration(buckets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Proactive rate on the hardest vs the easiest bucket, and their ratio (None when either
    bucket is empty or the easiest rate is 0; then compare the two rates directly).

    >>> calibration({"hardest": {"proactive_rate": 0.6}, "easiest": {"proactive_rate": 0.1}})
    {'hardest_proactive_rate': 0.6, 'easiest_proactive_rate': 0.1, 'ratio': 5.999999999999999}
    """
    hard = buckets["hardest"]["proactive_rate"]
    easy = buckets["easiest"]["proactive_rate"]
    ratio = hard / easy if hard is not None and easy else None
    return {"hardest_proactive_rate": hard, "easiest_proactive_rate": easy, "ratio": ratio}


def by_category(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Accuracy, hallucination, not-attempted and proactive rates per question category
    (prep's sub_category, e.g. arithmetic vs simpleQA).

    >>> by_category([{"category": "a", "grade": "correct", "proactive": False}])["a"]["accuracy"]
    1.0
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        groups.setdefault(s["category"] or "(none)", []).append(s)
    out = {}
    for name, rows in sorted(groups.items()):
        n = len(rows)
        out[name] = {
            "samples": n,
            "accuracy": sum(r["grade"] == "correct" for r in rows) / n,
            "hallucination_rate": sum(r["grade"] == "incorrect" for r in rows) / n,
            "not_attempted_rate": sum(r["grade"] == "not_attempted" for r in rows) / n,
            "proactive_rate": sum(bool(r["proactive"]) for r in rows) / n,
        }
    return out


def curve_summary(records: Sequence[Mapping[str, Any]], window: int = 5) -> dict[str, Any] | None:
    """The RL training curve from logs/grpo/metrics.jsonl: reward mean, proactive rate and group
    accuracy per step, and the means of the first and last `window` steps. A step logged twice
    (a resumed run) keeps its last record. None without records.

    >>> recs = [{"step": i, "reward/mean": float(i), "reward/proactive_rate": 0.0}
    ...         for i in range(10)]
    >>> s = curve_summary(recs)
    >>> s["reward_first"], s["reward_last"], s["reward_improved"], s["windows_overlap"]
    (2.0, 7.0, True, False)
    """
    by_step = {int(r["step"]): r for r in records if "reward/mean" in r}
    if not by_step:
        return None
    steps = sorted(by_step)
    reward = [by_step[s]["reward/mean"] for s in steps]
    proactive = [by_step[s].get("reward/proactive_rate") for s in steps]
    group_acc = [by_step[s].get("reward/group_acc") for s in steps]
    k = min(window, len(steps))

    def window_mean(values: list[Any], part: slice) -> float | None:
        return _mean(v for v in values[part] if v is not None)

    first, last = slice(0, k), slice(len(steps) - k, len(steps))
    return {
        "steps": steps,
        "reward_mean": reward,
        "proactive_rate": proactive,
        "group_acc": group_acc,
        "window": k,
        "windows_overlap": 2 * k > len(steps),
        "reward_first": window_mean(reward, first),
        "reward_last": window_mean(reward, last),
        "reward_improved": window_mean(reward, last) > window_mean(reward, first),
        "proactive_first": window_mean(proactive, first),
        "proactive_last": window_mean(proactive, last),
    }
