"""The reward's own optimum as the yardstick: is a checkpoint doing what its reward asks?

For a question the policy answers correctly with probability p (its own answer accuracy, from
its samples), each reward has a best action for one response of a group: answer, or hedge. It
is not written per reward here: the reward function itself scores constructed groups of n
responses (one response answering right, answering wrong or hedging, beside k of the other n - 1
answering right), and the expected score of each action at p is the binomial mix over k. That
gives the answer threshold of any reward, a user's own file included: p > beta/(1 + beta)
for the proactive reward when n is large (its format bonuses move it a little), p > 1/2 for
ternary, p > (1 + abstain)/2 with an abstention value.

Per checkpoint the report then says (docs/eval.md):
- best_action_rate: the share of questions where its majority action is the best one (a tie
  counts half);
- reward_earned / reward_best: the expected reward of its own answer rate per question against
  the best action's, both at its own p: how much of what its knowledge allows it collects;
- rational / mistaken hallucinations: wrong answers on questions where answering is the best bet
  (the reward asks for them) versus where hedging is (the training's fault);
- missed answers: hedges where answering was the best bet.

A response's action is eval's grade: an attempted answer (correct or incorrect) or not
attempted. A question the checkpoint never answers has no p of its own: it takes the base
model's (when the report has the base and it answered), else 0, and the counts say how many.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proactive_rl.shared.rewards import RewardFn, score_group

# The constructed question: its truth, a wrong answer and a hedge every built-in reads as such
# (the hedge says enough for proactive_strict and grades as not attempted).
TRUTH = "Paris"
QUESTION = "What is the capital of France?"
RIGHT = "<think>I recall this one.</think> Paris"
WRONG = "<think>I recall this one.</think> Lyon"
HEDGE = (
    "<think>I am not sure.</think><proactive>I have no reliable record of which city this "
    "question asks about.</proactive> I don't know."
)
_BISECT_STEPS = 60
_TIE = 1e-12  # expected scores this close are equal (float noise of the binomial sums)
_GRID = 200  # points that check the answer-minus-hedge gap changes sign once


@dataclass(frozen=True)
class ActionTable:
    """Scores of one response of a group of n, by the number k of the other n - 1 answering
    right: answering right (right[k]), answering wrong (wrong[k]) and hedging (hedge[k])."""

    n: int
    right: tuple[float, ...]
    wrong: tuple[float, ...]
    hedge: tuple[float, ...]

    def expected(self, p: float) -> tuple[float, float]:
        """(expected score of answering, of hedging) when every answer is right with prob. p
        and the rest of the group answers."""
        answer = hedge = 0.0
        for k in range(self.n):
            weight = math.comb(self.n - 1, k) * p**k * (1 - p) ** (self.n - 1 - k)
            answer += weight * (p * self.right[k] + (1 - p) * self.wrong[k])
            hedge += weight * self.hedge[k]
        return answer, hedge

    def gap(self, p: float) -> float:
        """Expected score of answering minus hedging at p: > 0 where answering is best."""
        answer, hedge = self.expected(p)
        return answer - hedge

    def threshold(self) -> float | None:
        """The accuracy from which answering pays (answer >= hedge), when the gap changes sign
        once in [0, 1]; 0 when answering always pays at least as much, None otherwise (a reward
        with no single threshold: each question is still judged on its own)."""
        signs = [self.gap(i / _GRID) >= 0 for i in range(_GRID + 1)]
        if all(signs):
            return 0.0
        if sum(a != b for a, b in zip(signs, signs[1:], strict=False)) != 1 or not signs[-1]:
            return None
        low, high = 0.0, 1.0
        for _ in range(_BISECT_STEPS):
            mid = (low + high) / 2
            low, high = (low, mid) if self.gap(mid) >= 0 else (mid, high)
        return high


def action_table(reward_fn: RewardFn, reward_kwargs: Mapping[str, Any], n: int) -> ActionTable:
    """Score the constructed groups with the reward itself (3n calls of one group each)."""

    def own_score(first: str, k: int) -> float:
        others = [RIGHT] * k + [WRONG] * (n - 1 - k)
        scored = score_group(
            reward_fn,
            QUESTION,
            [first, *others],
            TRUTH,
            "yardstick",
            {"index": -1},
            dict(reward_kwargs),
        )
        return scored.scores[0]

    ks = range(n)
    return ActionTable(
        n=n,
        right=tuple(own_score(RIGHT, k) for k in ks),
        wrong=tuple(own_score(WRONG, k) for k in ks),
        hedge=tuple(own_score(HEDGE, k) for k in ks),
    )


@dataclass(frozen=True)
class Question:
    """One question as a checkpoint met it: samples, answers, right answers, wrong answers."""

    samples: int = 0
    answered: int = 0
    right: int = 0
    wrong: int = 0

    @property
    def accuracy(self) -> float | None:
        """Its answer accuracy: right / answered, None when it never answered."""
        return self.right / self.answered if self.answered else None


def questions(samples: Sequence[Mapping[str, Any]], grade_key: str) -> dict[int, Question]:
    """Per question index, the counts of one checkpoint's samples under `grade_key`."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in samples:
        c = counts[s["question_index"]]
        c[0] += 1
        c[1] += s[grade_key] != "not_attempted"
        c[2] += s[grade_key] == "correct"
        c[3] += s[grade_key] == "incorrect"
    return {q: Question(*c) for q, c in counts.items()}


def yardstick(
    own: Mapping[int, Question], table: ActionTable, fallback: Mapping[int, Question] | None
) -> dict[str, Any]:
    """One checkpoint against the reward's best action on every question (module docstring)."""
    totals: dict[str, float] = defaultdict(float)
    for index, q in own.items():
        p, source = _accuracy(q, (fallback or {}).get(index))
        totals[f"p_from_{source}"] += 1
        answer, hedge = table.expected(p)
        tie = math.isclose(answer, hedge, abs_tol=_TIE)
        rate = q.answered / q.samples
        totals["best_action"] += _agreement(rate, answer > hedge, tie)
        totals["earned"] += rate * answer + (1 - rate) * hedge
        totals["best"] += max(answer, hedge)
        totals["samples"] += q.samples
        # at a tie both actions are best: a wrong answer is then what the reward allows
        totals["rational" if answer > hedge or tie else "mistaken"] += q.wrong
        totals["missed"] += (q.samples - q.answered) if answer > hedge and not tie else 0
    count = len(own)
    samples = totals["samples"] or 1
    return {
        "questions": count,
        "best_action_rate": totals["best_action"] / count if count else None,
        "reward_earned": totals["earned"] / count if count else None,
        "reward_best": totals["best"] / count if count else None,
        "rational_hallucination_rate": totals["rational"] / samples,
        "mistaken_hallucination_rate": totals["mistaken"] / samples,
        "missed_answer_rate": totals["missed"] / samples,
        "p_from_own": int(totals["p_from_own"]),
        "p_from_base": int(totals["p_from_base"]),
        "p_from_none": int(totals["p_from_none"]),
    }


def _accuracy(q: Question, fallback: Question | None) -> tuple[float, str]:
    """The p a question is judged at, and where it came from (own, base, none)."""
    if q.accuracy is not None:
        return q.accuracy, "own"
    if fallback is not None and fallback.accuracy is not None:
        return fallback.accuracy, "base"
    return 0.0, "none"


def _agreement(answer_rate: float, answering_best: bool, tie: bool) -> float:
    """1 when the majority action is a best one, 0 when not, 1/2 for a tied majority (unless
    both actions are equally good, when any majority is best)."""
    if tie:
        return 1.0
    if answer_rate == 0.5:
        return 0.5
    return float((answer_rate > 0.5) == answering_best)


def by_checkpoint(
    results: list[dict[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    table: ActionTable,
    grade_key: str,
) -> None:
    """Each checkpoint's `optimum` entry, in place; p falls back to the base model's."""
    by_label: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in samples:
        by_label[s["checkpoint"]].append(s)
    base = next((r for r in results if r["kind"] == "base"), None)
    fallback = questions(by_label[base["label"]], grade_key) if base is not None else None
    threshold = table.threshold()  # the reward's, the same for every checkpoint
    for result in results:
        own = questions(by_label[result["label"]], grade_key)
        result["optimum"] = {"threshold": threshold, **yardstick(own, table, fallback)}
