"""The reward's own optimum (stages/eval/optimum.py): thresholds computed by scoring constructed
groups with the real reward functions equal the closed forms, and constructed checkpoints whose
best actions are known are judged as they should be."""

from __future__ import annotations

import pytest

from proactive_rl.shared.hedge_rewards import PROACTIVE_BONUS
from proactive_rl.shared.rewards import REWARDS
from proactive_rl.stages.eval.optimum import (
    Question,
    action_table,
    by_checkpoint,
    questions,
    yardstick,
)


def _table(reward: str, n: int = 4, **kwargs):
    return action_table(REWARDS[reward], kwargs, n)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("beta", [0.3, 0.5, 0.8])
def test_proactive_threshold_is_the_closed_form(beta, n):
    """One response answering earns p (+ think bonus); hedging earns beta * (1 - group_acc)
    (+ think and proactive bonus), group_acc = (n - 1) p / n when the rest answer:
    p* = (beta + bonus) / (1 + beta (n - 1) / n); beta / (1 + beta) as n grows, bonus aside."""
    expected = (beta + PROACTIVE_BONUS) / (1 + beta * (n - 1) / n)
    assert _table("proactive", n, beta=beta).threshold() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("beta", [0.3, 0.5])
def test_strict_well_formed_keeps_the_proactive_threshold(beta):
    """The yardstick's constructed hedge is well formed, so requiring the format moves nothing:
    the threshold stays proactive's."""
    strict = _table("proactive_strict", 4, beta=beta, well_formed=True).threshold()
    assert strict == pytest.approx(_table("proactive", 4, beta=beta).threshold(), abs=1e-9)


@pytest.mark.parametrize("abstain", [-0.25, 0.0, 0.1, 0.3])
def test_ternary_threshold_is_half_of_one_plus_abstain(abstain):
    """+1 right, -1 wrong, `abstain` for a hedge: answering pays from p = (1 + abstain) / 2,
    whatever the group size (no group statistics)."""
    for n in (2, 4):
        table = _table("ternary", n, abstain=abstain)
        assert table.threshold() == pytest.approx((1 + abstain) / 2, abs=1e-9)


def test_strict_proactive_counts_the_constructed_hedge_as_a_hedge():
    """The constructed hedge says enough for proactive_strict: its table equals proactive's."""
    strict, plain = _table("proactive_strict", beta=0.3), _table("proactive", beta=0.3)
    assert strict == plain


def test_correctness_reward_always_asks_for_an_answer():
    """Plain correctness pays nothing for a hedge: answering is never worse."""
    assert _table("correctness").threshold() == 0.0


def _samples(label: str, grades_by_question: dict[int, str]) -> list[dict]:
    """A checkpoint's samples: per question a string of grades, c(orrect) i(ncorrect) n(ot
    attempted), one letter per sample."""
    name = {"c": "correct", "i": "incorrect", "n": "not_attempted"}
    return [
        {"checkpoint": label, "question_index": q, "grade": name[letter]}
        for q, letters in grades_by_question.items()
        for letter in letters
    ]


def test_ternary_judges_constructed_questions_by_their_accuracy():
    """ternary (threshold 1/2), four questions of four samples:
    q0 answers 3 right 1 wrong (p 0.75): best is answering, it answers: the wrong one is rational;
    q1 answers 1 right 3 wrong (p 0.25): best is hedging, it answers: three mistakes;
    q2 hedges on all (never answers): p from the base (0.0): best is hedging, it hedges;
    q3 answers 1 right, hedges 3 (p 1.0): best is answering: three missed answers."""
    table = _table("ternary")
    own = questions(_samples("policy", {0: "ccci", 1: "ciii", 2: "nnnn", 3: "cnnn"}), "grade")
    base = questions(_samples("base", {0: "cccc", 1: "ciii", 2: "iiii", 3: "cccc"}), "grade")
    got = yardstick(own, table, base)
    assert table.threshold() == pytest.approx(0.5)
    assert got["best_action_rate"] == pytest.approx(2 / 4)  # q0 and q2
    assert got["rational_hallucination_rate"] == pytest.approx(1 / 16)
    assert got["mistaken_hallucination_rate"] == pytest.approx(3 / 16)
    assert got["missed_answer_rate"] == pytest.approx(3 / 16)
    assert (got["p_from_own"], got["p_from_base"], got["p_from_none"]) == (3, 1, 0)
    # expected ternary scores: answering 2p - 1, hedging 0
    earned = [2 * 0.75 - 1, 2 * 0.25 - 1, 0.0, 0.25 * (2 * 1.0 - 1)]
    best = [0.5, 0.0, 0.0, 1.0]
    assert got["reward_earned"] == pytest.approx(sum(earned) / 4)
    assert got["reward_best"] == pytest.approx(sum(best) / 4)


def test_proactive_calls_an_answer_at_30_percent_rational_that_ternary_calls_a_mistake():
    """The same behaviour judged by two rewards: answering a question right 1 time in 3 (p 1/3)
    is the best bet under proactive at beta 0.3 (threshold ~0.29 at n = 3) and a mistake under
    ternary (threshold 0.5). This is the report's point: whose fault a hallucination is."""
    own = questions(_samples("policy", {0: "cii"}), "grade")
    proactive = yardstick(own, _table("proactive", 3, beta=0.3), None)
    ternary = yardstick(own, _table("ternary", 3), None)
    assert proactive["rational_hallucination_rate"] == pytest.approx(2 / 3)
    assert proactive["mistaken_hallucination_rate"] == 0
    assert ternary["rational_hallucination_rate"] == 0
    assert ternary["mistaken_hallucination_rate"] == pytest.approx(2 / 3)
    assert proactive["best_action_rate"] == 1 and ternary["best_action_rate"] == 0


def test_a_tied_majority_counts_half_and_a_question_with_no_accuracy_is_counted():
    """Two answers and two hedges is no majority (half agreement); a question nobody answered
    is judged at p 0 and counted as such."""
    table = _table("ternary")
    got = yardstick({0: Question(4, 2, 2, 0), 1: Question(4, 0, 0, 0)}, table, None)
    assert got["best_action_rate"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["p_from_none"] == 1


def test_by_checkpoint_takes_the_base_accuracy_only_where_a_checkpoint_never_answers():
    results = [{"label": "base", "kind": "base"}, {"label": "policy_2", "kind": "policy"}]
    samples = _samples("base", {0: "cc", 1: "ii"}) + _samples("policy_2", {0: "nn", 1: "in"})
    by_checkpoint(results, samples, _table("ternary", 2), "grade")
    policy = results[1]["optimum"]
    assert policy["threshold"] == results[0]["optimum"]["threshold"] == pytest.approx(0.5)
    # q0: never answered -> base p 1.0: answering was best, both hedges are missed answers;
    # q1: own p 0 -> hedging was best, its wrong answer is a mistake
    assert (policy["p_from_own"], policy["p_from_base"]) == (1, 1)
    assert policy["missed_answer_rate"] == pytest.approx(2 / 4)
    assert policy["mistaken_hallucination_rate"] == pytest.approx(1 / 4)
    assert results[0]["optimum"]["best_action_rate"] == pytest.approx(1 / 2)
