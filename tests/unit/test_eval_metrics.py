"""The evaluation's pure pieces: SimpleQA-style grades, hedges, tag format, F-score, summaries,
difficulty buckets, calibration, the RL curve summary, the acceptance checks and the config."""

from __future__ import annotations

import doctest

import pytest

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.tags import formal_answer, tag_format
from proactive_rl.stages.eval import metrics
from proactive_rl.stages.eval.acceptance import acceptance
from proactive_rl.stages.eval.config import EvalConfig
from proactive_rl.stages.eval.metrics import (
    bucket_table,
    by_category,
    calibration,
    curve_summary,
    difficulty_bucket,
    f_score,
    grade,
    is_hedge,
    summarize,
)
from proactive_rl.stages.eval.report import markdown


def test_doctests() -> None:
    assert doctest.testmod(metrics, verbose=False).failed == 0


@pytest.mark.parametrize(
    ("formal", "hedge"),
    [
        ("", True),
        ("   ", True),
        ("I don't know.", True),
        ("I do not know the exact year.", True),
        ("I DON\u2019T KNOW who that was.", True),  # curly apostrophe, upper case
        ("I'm not sure.", True),
        ("I cannot answer that.", True),
        ("I am unable to say.", True),
        ("There is no information about this village.", True),
        (
            "I do not have reliable information about this village, its library, or its history.",
            True,
        ),
        ("I don't know. Please check a reliable source.", True),
        ("Sorry; I'm not certain.", True),  # a filler-only clause is ignored
        ("Sorry, it is Lyon.", False),
        ("Unfortunately. Hmm!", True),  # nothing but filler: no answer
        ("Paris", False),
        ("Maybe 1912.", False),
        ("I'm not sure, but I think it was 1912.", False),
        ("It was 1912. I'm not sure though.", False),
        ("Not sure. Maybe Lyon.", False),
        ("The cannot-be-named author", False),  # "cannot" alone is not a hedge, "I cannot" is
        ("I'm not sure, it is 1912.", True),  # known limit: commas do not split clauses
    ],
)
def test_is_hedge(formal: str, hedge: bool) -> None:
    assert is_hedge(formal) is hedge


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        ("<think>t</think> Paris", "paris", "correct"),
        ("<think>t</think> Lyon", "paris", "incorrect"),
        ("<think>t</think><proactive>Unsure.</proactive> I don't know.", "paris", "not_attempted"),
        ("<think>t</think><proactive>Unsure.</proactive> Maybe Lyon.", "paris", "incorrect"),
        ("<think>t</think><proactive>Unsure.</proactive> Maybe Paris.", "paris", "correct"),
        ("<think>Paris? no</think>", "paris", "not_attempted"),  # truth only in the thinking
        ("<think>never closed... Paris", "paris", "not_attempted"),  # truncated, no answer
        ("I don't know if it is Paris.", "paris", "correct"),  # correct wins over the hedge
        ("Paris", "   ", "incorrect"),  # an empty ground truth is never correct
    ],
)
def test_grade_on_the_formal_answer(response: str, truth: str, expected: str) -> None:
    assert grade(formal_answer(response), truth) == expected


@pytest.mark.parametrize(
    ("response", "ok", "malformed"),
    [
        ("<think>t</think>\n\nParis", True, False),
        ("<think>t</think><proactive>p</proactive> I don't know.", True, False),
        ("<THINK>t</Think> Paris", True, False),
        ("<think></think> Paris", True, False),  # an empty block is still a block
        ("<think>t</think>", False, False),  # no plain answer
        ("<think>t</think><proactive>p</proactive>", False, False),
        ("Paris <think>t</think>", False, False),  # the answer is not after the tags
        ("Paris", False, False),  # no think block
        ("<proactive>p</proactive> Paris", False, False),
        ("<think>t ... Paris", False, True),  # unclosed
        ("t</think> Paris", False, True),  # stray closing tag
        ("<think>t</think><proactive>p Paris", False, True),
        ("<think>a<think>b</think>c</think> Paris", False, True),  # nested: a stray tag is left
    ],
)
def test_tag_format(response: str, ok: bool, malformed: bool) -> None:
    assert tag_format(response) == (ok, malformed)


@pytest.mark.parametrize(
    ("accuracy", "given", "expected"),
    [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 1.0, 2 / 3), (0.25, 0.5, 1 / 3), (0.0, 0.0, 0.0)],
)
def test_f_score(accuracy: float, given: float, expected: float) -> None:
    assert f_score(accuracy, given) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("acc", "bucket"),
    [
        (0.0, "hardest"),
        (0.01, "hard"),
        (0.49, "hard"),
        (0.5, "easy"),
        (0.99, "easy"),
        (1.0, "easiest"),
    ],
)
def test_difficulty_bucket(acc: float, bucket: str) -> None:
    assert difficulty_bucket(acc) == bucket


def test_difficulty_bucket_rejects_impossible_accuracy() -> None:
    with pytest.raises(ValueError):
        difficulty_bucket(1.5)


def row(q: int, g: str, proactive: bool = False, **extra) -> dict:
    base = dict(
        question_index=q,
        grade=g,
        proactive=proactive,
        think=True,
        format_ok=True,
        malformed=False,
        truncated=False,
        reward=1.0 if g == "correct" else 0.0,
        response_tokens=10,
        category="simpleQA",
    )
    return {**base, **extra}


def test_summary_with_no_attempts() -> None:
    s = summarize([row(0, "not_attempted", True), row(0, "not_attempted", True)])
    assert s["accuracy"] == 0.0 and s["accuracy_given_attempted"] == 0.0 and s["f_score"] == 0.0
    assert s["not_attempted_rate"] == 1.0 and s["hallucination_rate"] == 0.0
    assert s["proactive_rate"] == 1.0


def test_summary_all_correct() -> None:
    s = summarize([row(0, "correct"), row(1, "correct")])
    assert s["accuracy"] == s["accuracy_given_attempted"] == s["f_score"] == 1.0
    assert s["hallucination_rate"] == s["not_attempted_rate"] == 0.0
    assert s["mean_reward"] == 1.0 and s["mean_response_tokens"] == 10


def test_summary_mixed_counts_and_rates_add_up() -> None:
    rows = [
        row(0, "correct"),
        row(0, "incorrect", truncated=True, malformed=True, format_ok=False),
        row(1, "not_attempted", True, think=False, format_ok=False),
        row(1, "incorrect"),
    ]
    s = summarize(rows)
    assert (s["correct"], s["incorrect"], s["not_attempted"], s["samples"]) == (1, 2, 1, 4)
    assert s["accuracy"] + s["hallucination_rate"] + s["not_attempted_rate"] == pytest.approx(1)
    assert s["accuracy_given_attempted"] == pytest.approx(1 / 3)
    assert s["f_score"] == pytest.approx(2 * 0.25 * (1 / 3) / (0.25 + 1 / 3))
    assert (s["format_rate"], s["think_rate"], s["malformed_rate"]) == (0.5, 0.75, 0.25)
    assert s["truncated_rate"] == 0.25 and s["proactive_rate"] == 0.25


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_buckets_use_each_question_s_own_accuracy() -> None:
    rows = [
        *(row(0, "not_attempted", True) for _ in range(4)),  # acc 0: hardest, all proactive
        row(1, "correct"),
        *(row(1, "incorrect", True) for _ in range(3)),  # acc 0.25: hard
        *(row(2, "correct") for _ in range(2)),
        *(row(2, "incorrect") for _ in range(2)),  # acc 0.5: easy
        *(row(3, "correct") for _ in range(3)),
        row(3, "correct", True),  # acc 1: easiest, 1 of 4 proactive
        *(row(4, "correct") for _ in range(4)),  # acc 1
    ]
    table = bucket_table(rows)
    assert [table[b]["questions"] for b in metrics.BUCKETS] == [1, 1, 1, 2]
    assert table["hardest"]["proactive_rate"] == 1.0
    assert table["hard"]["proactive_rate"] == 0.75 and table["hard"]["accuracy"] == 0.25
    assert table["easy"]["proactive_rate"] == 0.0
    assert table["easiest"]["proactive_rate"] == 1 / 8 and table["easiest"]["samples"] == 8
    cal = calibration(table)
    assert cal["ratio"] == pytest.approx(8.0)


def test_empty_buckets_and_undefined_ratio() -> None:
    table = bucket_table([row(0, "incorrect", True), row(0, "incorrect")])
    assert table["easiest"] == {
        "range": "accuracy = 1",
        "questions": 0,
        "samples": 0,
        "proactive_rate": None,
        "accuracy": None,
        "not_attempted_rate": None,
    }
    assert calibration(table) == {
        "hardest_proactive_rate": 0.5,
        "easiest_proactive_rate": None,
        "ratio": None,
    }
    easy_zero = bucket_table([row(0, "incorrect", True), row(1, "correct")])
    assert calibration(easy_zero)["ratio"] is None  # 1.0 / 0.0: compare the rates instead


def test_by_category() -> None:
    rows = [row(0, "correct", category="arithmetic"), row(1, "incorrect", True, category="")]
    out = by_category(rows)
    assert out["arithmetic"]["accuracy"] == 1.0
    assert out["(none)"]["hallucination_rate"] == 1.0 and out["(none)"]["proactive_rate"] == 1.0


def test_curve_summary_windows_and_resumed_steps() -> None:
    records = [{"step": s, "reward/mean": 0.0, "reward/proactive_rate": 0.1} for s in range(3)]
    # step 2 logged again by a resumed run: the last record wins
    records += [{"step": 2, "reward/mean": 3.0, "reward/proactive_rate": 0.4}]
    records += [{"step": 3, "time": 1.0}]  # a record without rewards is ignored
    s = curve_summary(records, window=2)
    assert s["steps"] == [0, 1, 2] and s["reward_mean"] == [0.0, 0.0, 3.0]
    assert (s["reward_first"], s["reward_last"], s["reward_improved"]) == (0.0, 1.5, True)
    assert s["windows_overlap"] is True and s["proactive_last"] == pytest.approx(0.25)
    assert curve_summary([]) is None


def checkpoint(kind: str, number, label: str, **metric_values) -> dict:
    m = {
        "format_rate": 0.0,
        "hallucination_rate": 0.5,
        "accuracy": 0.2,
        "truthfulness": -0.3,
        **metric_values,
    }
    cal = {"hardest_proactive_rate": 0.6, "easiest_proactive_rate": 0.1, "ratio": 6.0}
    return {"kind": kind, "number": number, "label": label, "metrics": m, "calibration": cal}


def test_acceptance_reads_sft_final_and_curve() -> None:
    report = {
        "checkpoints": [
            checkpoint("base", None, "base", format_rate=0.1),
            checkpoint("sft", 1, "sft_epoch_1", format_rate=0.5),
            checkpoint("sft", 2, "sft_epoch_2", format_rate=0.97),
            checkpoint("policy", 8, "policy_8", hallucination_rate=0.2),
            checkpoint("policy", 4, "policy_4"),
        ],
        "training": {"curve": {"reward_first": 0.1, "reward_last": 0.3, "reward_improved": True}},
    }
    checks = {c["id"]: c for c in acceptance(report)}
    assert checks["sft_format"]["passed"] is True
    assert checks["sft_format"]["checkpoint"] == "sft_epoch_2"
    assert checks["sft_format"]["values"] == {"sft": 0.97, "base": 0.1}
    assert checks["rl_reward_rises"]["passed"] is True
    assert checks["final_calibration"]["passed"] is True
    assert checks["final_calibration"]["checkpoint"] == "policy_8"
    assert checks["final_hallucination_below_sft"]["passed"] is True


def test_acceptance_without_training_is_not_measured() -> None:
    report = {"checkpoints": [checkpoint("base", None, "base")], "training": {"curve": None}}
    checks = acceptance(report)
    assert [c["passed"] for c in checks] == [None] * 4  # no final policy: no learning goals
    assert checks[0]["detail"] == "sft –, base 0.000"
    assert checks[1]["detail"] == "not measured"


def test_learning_goals_against_the_base() -> None:
    """Hallucination <= 10%, accuracy >= 80% of the base's, truthfulness >= 0: each goal is
    judged on the final policy and fails when its number is on the wrong side."""
    final = checkpoint(
        "policy", 9, "policy_9", hallucination_rate=0.08, accuracy=0.13, truthfulness=0.05
    )
    final["intervals"] = {"hallucination_rate": [0.05, 0.11], "truthfulness": [-0.01, 0.1]}
    report = {
        "checkpoints": [checkpoint("base", None, "base", accuracy=0.16), final],
        "training": {"curve": None},
    }
    checks = {c["id"]: c for c in acceptance(report)}
    assert checks["goal_hallucination"]["passed"] is True
    assert checks["goal_hallucination"]["values"] == {"final": 0.08, "low": 0.05, "high": 0.11}
    assert checks["goal_accuracy_kept"]["passed"] is True  # 0.13 >= 0.8 * 0.16 = 0.128
    assert checks["goal_truthfulness"]["passed"] is True
    final["metrics"].update(hallucination_rate=0.12, accuracy=0.12, truthfulness=-0.01)
    checks = {c["id"]: c for c in acceptance(report)}
    failed = ("goal_hallucination", "goal_accuracy_kept", "goal_truthfulness")
    assert [checks[g]["passed"] for g in failed] == [False, False, False]
    assert checks["goal_hedges_where_base_fails"]["passed"] is None  # no base buckets


def test_hedging_everywhere_fails_the_base_difficulty_goal() -> None:
    """A policy that hedges on every question passes its own-difficulty calibration vacuously
    (all its questions are 'hardest') but not the goal judged by the base model's difficulty."""
    everywhere = {"hardest_proactive_rate": 0.99, "easiest_proactive_rate": 0.98, "ratio": 1.0}
    final = checkpoint("policy", 9, "policy_9")
    final["calibration_by_base"] = everywhere
    report = {"checkpoints": [checkpoint("base", None, "base"), final], "training": {"curve": None}}
    goal = {c["id"]: c for c in acceptance(report)}["goal_hedges_where_base_fails"]
    assert goal["passed"] is False and goal["values"]["base_easiest"] == 0.98
    final["calibration_by_base"] = {**everywhere, "easiest_proactive_rate": 0.2}
    goal = {c["id"]: c for c in acceptance(report)}["goal_hedges_where_base_fails"]
    assert goal["passed"] is True


def test_bucket_table_by_given_difficulty() -> None:
    rows = [row(0, "not_attempted", True), row(1, "not_attempted", True)]
    own = bucket_table(rows)
    assert own["hardest"]["questions"] == 2
    by_base = bucket_table(rows, {0: 1.0, 1: 0.0})
    assert by_base["easiest"]["questions"] == 1 and by_base["hardest"]["questions"] == 1


def test_reward_rises_only_beyond_its_interval() -> None:
    """A higher last window whose interval of the change still reaches 0 does not count."""
    curve = {"reward_first": 0.5, "reward_last": 0.52, "reward_improved": True}
    curve["reward_change"] = {"change": 0.02, "interval": [-0.03, 0.07], "paired": True}
    report = {"checkpoints": [], "training": {"curve": curve}}
    rises = {c["id"]: c for c in acceptance(report)}["rl_reward_rises"]
    assert rises["passed"] is False and rises["values"]["low"] == -0.03
    curve["reward_change"]["interval"] = [0.01, 0.05]
    assert {c["id"]: c for c in acceptance(report)}["rl_reward_rises"]["passed"] is True


def test_markdown_mentions_every_checkpoint_and_bucket() -> None:
    rows = [row(0, "correct"), row(1, "not_attempted", True)]
    entry = {
        "label": "policy_3",
        "spec": "final",
        "kind": "policy",
        "number": 3,
        "path": "run/policies/step_000003",
        "seconds": 1.0,
        "metrics": summarize(rows),
        "buckets": bucket_table(rows),
        "calibration": calibration(bucket_table(rows)),
        "categories": by_category(rows),
    }
    report = {
        "name": "report",
        "run_dir": "run",
        "split": "test",
        "questions": 2,
        "n": 1,
        "seeds": {"eval": 7},
        "seconds": 3.0,
        "settings": {"eval": EvalConfig().model_dump(mode="json")},
        "checkpoints": [entry],
        "training": {"curve": None, "sft_seconds": None, "rl_seconds": None},
    }
    report["acceptance"] = acceptance(report)
    text = markdown(report, ["grades.png"])
    for needle in ("policy_3", "hardest", "easiest", "F-score", "![grades.png](grades.png)"):
        assert needle in text


@pytest.mark.parametrize(
    ("overrides", "specs"),
    [
        ([], None),
        (["checkpoints=base,sft:all, rl:epochs"], ["base", "sft:all", "rl:epochs"]),
        (['checkpoints=["final", "policy:3"]'], ["final", "policy:3"]),
        (["checkpoint=sft"], ["sft"]),  # the deprecated single field
    ],
)
def test_config_checkpoint_specs(overrides: list[str], specs) -> None:
    assert load_config(EvalConfig, None, overrides).checkpoint_specs() == specs


@pytest.mark.parametrize(
    "overrides",
    [
        ["checkpoint=sft", "checkpoints=final"],
        ["checkpoints=[]"],
        ["name=../elsewhere"],
        ["n=0"],
    ],
)
def test_config_rejects(overrides: list[str]) -> None:
    with pytest.raises(UserError):
        load_config(EvalConfig, None, overrides)
