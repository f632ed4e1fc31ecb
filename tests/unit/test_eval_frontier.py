"""The self-consistency frontier (stages/eval/frontier.py) on constructed samples whose answer
is known: agreement that separates right from wrong answers reaches the goals, agreement on a
confidently repeated wrong answer does not, hedges never vote."""

from __future__ import annotations

import pytest

from proactive_rl.stages.eval.frontier import (
    consistency_frontier,
    self_consistency_frontier,
    support,
)


def group(question: int, answers: list[tuple[str, str]]) -> list[dict]:
    return [
        {"question_index": question, "formal_answer": a, "grade": g, "grade_normalised": g}
        for a, g in answers
    ]


def known_and_guessed(wrong_agree: bool) -> list[dict]:
    """One question answered right 4 times out of 4, three guessed: scattered wrong answers, or
    the same wrong answer every time."""
    rows = group(0, [("Paris", "correct")] * 4)
    for q in (1, 2, 3):
        answers = ["Lyon"] * 4 if wrong_agree else ["Lyon", "Nice", "Lille", "Metz"]
        rows += group(q, [(a, "incorrect") for a in answers])
    return rows


def test_agreement_that_separates_reaches_both_goals():
    view = self_consistency_frontier(known_and_guessed(wrong_agree=False))["normalised"]
    assert view["best_accuracy_within_hallucination_max"] == pytest.approx(0.25)
    assert view["both_reachable_by_hedging"] is True
    assert view["best_truthfulness"] == pytest.approx(0.25)
    assert view["thresholds"][0] == {"min_support": 3, "accuracy": 0.25, "hallucination": 0.0}
    assert view["thresholds"][-1]["hallucination"] == pytest.approx(0.75)


def test_a_confidently_repeated_wrong_answer_defeats_it():
    view = self_consistency_frontier(known_and_guessed(wrong_agree=True))["normalised"]
    # every sample has three others agreeing: answering any means answering all
    assert [t["min_support"] for t in view["thresholds"]] == [3, 2, 1, 0]
    assert view["thresholds"][0]["hallucination"] == pytest.approx(0.75)
    # within 10% hallucination only a random share of the top level: 0.1 / 0.75 of it
    assert view["best_accuracy_within_hallucination_max"] == pytest.approx(0.25 * 0.1 / 0.75)
    assert view["both_reachable_by_hedging"] is False
    assert view["best_truthfulness"] == 0.0


def test_hedges_never_vote_and_normalised_answers_agree():
    rows = group(
        0,
        [
            ("The Eiffel Tower.", "correct"),
            ("eiffel tower", "correct"),
            ("I don't know", "not_attempted"),
            ("I don't know", "not_attempted"),
        ],
    )
    assert support(rows, "grade") == [(1, "correct"), (1, "correct"), (-1, "not_attempted")] + [
        (-1, "not_attempted")
    ]


def test_the_goal_is_the_base_models_accuracy_when_given():
    rows = known_and_guessed(wrong_agree=False)
    view = self_consistency_frontier(rows, {"substring": 0.5, "normalised": 0.5})["normalised"]
    assert view["accuracy_goal"] == pytest.approx(0.4)
    assert view["both_reachable_by_hedging"] is False


def test_no_samples_answer_nothing():
    view = consistency_frontier([], base_accuracy=0.0)
    assert view["thresholds"] == [] and view["best_accuracy_within_hallucination_max"] == 0.0


def test_free_form_paragraphs_are_marked_not_comparable():
    """A base model's paragraphs never repeat word for word: the frontier is computed but not
    shown as the model's signal."""
    long = "the village held about two thousand people in the census of that year"
    rows = group(0, [(f"{long} {i}", "incorrect") for i in range(4)])
    short = self_consistency_frontier(known_and_guessed(False))["normalised"]
    free = self_consistency_frontier(rows)["normalised"]
    assert short["comparable"] is True and short["median_answer_words"] == 1.0
    assert (
        free["comparable"] is False and free["median_answer_words"] == 12.0
    )  # "the" is not a word here


def test_gated_samples_have_the_thresholds_rates():
    """gated() turns the rule at k into samples eval's metrics read: its rates are the
    frontier's at k, whatever order the samples come in."""
    from proactive_rl.stages.eval.frontier import gated

    rows = known_and_guessed(wrong_agree=False)[::-1]  # questions interleaved differently
    rows += group(4, [("Rome", "correct"), ("Rome", "correct"), ("Milan", "incorrect")] * 1)
    view = self_consistency_frontier(rows)["normalised"]
    for t in view["thresholds"]:
        kept = gated(rows, t["min_support"])
        assert [s["question_index"] for s in kept] != [] and len(kept) == len(rows)
        right = sum(s["grade_normalised"] == "correct" for s in kept) / len(kept)
        wrong = sum(s["grade_normalised"] == "incorrect" for s in kept) / len(kept)
        assert (right, wrong) == pytest.approx((t["accuracy"], t["hallucination"]))
    # the original rows are left as they were
    assert sum(s["grade"] == "correct" for s in rows) == 6
