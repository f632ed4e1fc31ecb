"""The two graders and the rewards beyond the recipe, on hand-worked cases: where the recipe's
substring rule is gamed, the normalised grader is not, and the empty hedge stops paying."""

from __future__ import annotations

from typing import Any

import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.grading import is_correct, normalised_correct, truths_of
from proactive_rl.shared.rewards import load_reward, proactive_reward


def call(fn: Any, responses: list[str], truth: Any, **kwargs: Any) -> list[Any]:
    n = len(responses)
    return fn("prompt", responses, [truth] * n, ["sampleQA"] * n, [{}] * n, **kwargs)


@pytest.mark.parametrize(
    ("answer", "truth", "substring", "normalised"),
    [
        ("Michio Sugeno", "michio sugeno", True, True),
        ("It was THE Eiffel-Tower.", "Eiffel Tower", False, True),  # punctuation, articles
        ("In 2012", "2", True, False),  # a short truth inside a longer number
        ("1,000 people", "1000", False, True),  # number formats
        ("3.0 metres", "3", True, True),
        ("Paris or Lyon", "Paris", True, False),  # two candidates
        ("Paris, Lyon, Nice, Marseille", "Paris", True, False),  # a list of candidates
        ("- Paris\n- Lyon", "Paris", True, False),
        ("Paris, France", "Paris", True, True),  # one answer with a qualifier
        ("Kurt Gödel", "Kurt Godel", False, True),  # accents
        ("Sugeno", "Michio Sugeno", False, False),  # part of the truth is not the truth
        ("", "Paris", False, False),
        ("anything", "  ", False, False),
    ],
)
def test_the_two_graders(answer, truth, substring, normalised):
    assert is_correct(answer, truth) is substring
    assert normalised_correct(answer, truth) is normalised


def test_ground_truth_aliases():
    aliases = '["NYC", "New York City"]'  # as a parquet string column carries them
    assert truths_of(aliases) == ["NYC", "New York City"]
    assert normalised_correct("It is New York City.", aliases)
    assert is_correct("nyc", aliases)
    assert normalised_correct("NYC", ["New York City", "NYC"])
    assert not normalised_correct("Boston", aliases)
    assert truths_of("[not json") == ["[not json"]  # a truth that merely starts with "["


def test_every_builtin_takes_the_normalised_grader():
    # "2" is inside "2012": correct for the recipe's rule, wrong for the normalised one
    for name in ("proactive", "proactive_strict", "ternary", "correctness", "adaptive_difficulty"):
        fn = load_reward(name, {"grader": "normalised"})
        loose = call(fn, ["In 2012"], "2")[0]
        strict = call(fn, ["In 2012"], "2", grader="normalised")[0]
        score = lambda item: item["score"] if isinstance(item, dict) else item  # noqa: E731
        assert score(loose) > score(strict), name


def test_an_unknown_grader_is_refused_at_start_up():
    with pytest.raises(UserError, match="grader of reward 'proactive' must be one of"):
        load_reward("proactive", {"grader": "llm"})


def test_the_empty_hedge_exploit_pays_under_the_recipe_and_not_under_the_new_rewards():
    empty = "<proactive></proactive>"
    group = [empty, empty, empty, empty]
    recipe = [o["score"] for o in call(proactive_reward, group, "Paris", beta=0.5)]
    assert recipe == pytest.approx([0.55] * 4)  # 0.5 * (1 - 0) + 0.05
    strict = load_reward("proactive_strict", {"beta": 0.5})
    assert [o["score"] for o in call(strict, group, "Paris", beta=0.5)] == [0.0] * 4
    ternary = load_reward("ternary", {})
    assert [o["score"] for o in call(ternary, group, "Paris")] == [0.0] * 4
    # ... and a real hedge still pays where the group fails
    real = "<proactive>I have no reliable record of this village's founding year.</proactive>"
    out = call(strict, [real, "Lyon"], "Paris", beta=0.5)
    assert out[0]["score"] == pytest.approx(0.5 * 1.0 + 0.05)
    assert out[1]["score"] == 0.0


def test_ternary_prefers_a_hedge_only_where_the_model_is_wrong():
    ternary = load_reward("ternary", {})
    hedge = "<proactive>Unsure which year.</proactive> 1912"
    assert [o["score"] for o in call(ternary, ["1912", hedge, "1913"], "1912")] == [1, 0, -1]


def test_min_hedge_words_is_a_number():
    with pytest.raises(UserError, match="min_hedge_words"):
        load_reward("proactive_strict", {"min_hedge_words": "three"})
