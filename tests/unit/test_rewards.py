"""Reward formulas from docs/seed-pipeline.md on hand-computed groups, plus loading and validation.

Expected values are worked out in the comments; `pytest.approx` only absorbs float rounding.
"""

from __future__ import annotations

import doctest
import math
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from proactive_rl.shared import grading, hedge_rewards, rewards, tags
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.grading import is_correct, success_rate
from proactive_rl.shared.rewards import (
    REWARDS,
    GroupScore,
    adaptive_difficulty_reward,
    best_of_n_reward,
    correctness_reward,
    load_reward,
    pass_at_k_reward,
    proactive_reward,
    relative_quality_reward,
    score_group,
)


def call(fn: Any, responses: list[str], truth: str, **kwargs: Any) -> list[Any]:
    """Call a reward the way the trainer does: one group, per-response lists."""
    n = len(responses)
    return fn("prompt", responses, [truth] * n, ["sampleQA"] * n, [{}] * n, **kwargs)


def scores(fn: Any, responses: list[str], truth: str, **kwargs: Any) -> list[float]:
    return [o["score"] if isinstance(o, dict) else o for o in call(fn, responses, truth, **kwargs)]


# --- correctness -------------------------------------------------------------------------------

CORRECT_CASES = [
    # (formal answer, ground truth, correct)
    ("Michio Sugeno", "Michio Sugeno", True),
    ("It was michio sugeno.", "  MICHIO SUGENO \n", True),  # stripped + lower-cased
    ("Sugeno", "Michio Sugeno", False),
    ("New York", "New  York", True),  # ground-truth whitespace collapsed like the answer's
    # Known weakness, documented as current behaviour: short truths match inside longer answers,
    # and listing candidates is rewarded.
    ("In 2012", "2", True),
    ("Paris, Lyon, Marseille, Nice", "Nice", True),
    # An empty ground truth would be a substring of everything; it never counts.
    ("anything", "", False),
    ("", "   ", False),
    ("", "Paris", False),
]


@pytest.mark.parametrize(("formal", "truth", "expected"), CORRECT_CASES)
def test_is_correct(formal: str, truth: str, expected: bool) -> None:
    assert is_correct(formal, truth) is expected


CORRECTNESS_CASES = [
    # (responses, ground truth, expected scores)
    (["Paris", "Lyon"], "paris", [1.0, 0.0]),
    # Only the formal answer is graded: the right answer inside think/proactive does not count.
    (
        ["<think>Paris?</think> Lyon", "<proactive>Maybe Paris</proactive> Unknown"],
        "Paris",
        [0.0, 0.0],
    ),
    (["<think>Paris is wrong</think> Lyon", "<think>x</think> paris"], "Paris", [0.0, 1.0]),
    (["<think>Paris, never closed"], "Paris", [0.0]),
    (["2012"], "2", [1.0]),  # the "2" vs "2012" weakness
    (["Paris"], "", [0.0]),
    ([], "Paris", []),
]


@pytest.mark.parametrize(("responses", "truth", "expected"), CORRECTNESS_CASES)
def test_correctness_reward(responses: list[str], truth: str, expected: list[float]) -> None:
    assert call(correctness_reward, responses, truth) == expected


# --- proactive ---------------------------------------------------------------------------------

# Ground truth "1912". A: proactive + think, and its answer also contains 1912 (correct);
# B: think, correct; C: wrong, no tags; D: proactive only, wrong. group_acc = 2/4 = 0.5.
MIXED = [
    "<think>t</think><proactive>Not sure.</proactive> Maybe 1912",
    "<think>t</think> 1912",
    "1850",
    "<proactive>unsure</proactive> I don't know",
]
# Ground truth "paris", one correct of four: group_acc = 0.25.
ONE_RIGHT = ["Paris", "<proactive>x</proactive> No idea", "Lyon", "Nice"]
ALL_PROACTIVE = ["<think>a</think><proactive>b</proactive> ?", "<proactive>b</proactive> ?"]

PROACTIVE_CASES = [
    # (responses, truth, beta, expected scores)
    # beta 0.5: A = 0.5*(1-0.5)+0.1 = 0.35 (proactive pays even though A was right);
    # B = 1+0.05; C = 0; D = 0.5*0.5+0.05 = 0.30.
    (MIXED, "1912", 0.5, [0.35, 1.05, 0.0, 0.30]),
    # beta 0.8: A = 0.8*0.5+0.1 = 0.5; D = 0.4+0.05 = 0.45.
    (MIXED, "1912", 0.8, [0.5, 1.05, 0.0, 0.45]),
    # group_acc 0.25: beta 0.5 -> 0.5*0.75+0.05 = 0.425; beta 0.8 -> 0.6+0.05 = 0.65.
    (ONE_RIGHT, "paris", 0.5, [1.0, 0.425, 0.0, 0.0]),
    (ONE_RIGHT, "paris", 0.8, [1.0, 0.65, 0.0, 0.0]),
    # Nobody right: group_acc 0 -> beta + bonus (0.1 with think, 0.05 without).
    (ALL_PROACTIVE, "paris", 0.5, [0.6, 0.55]),
    # Everybody right: group_acc 1 -> abstaining earns only its format bonus.
    (["<proactive>p</proactive> Paris", "Paris"], "paris", 0.5, [0.05, 1.0]),
]


@pytest.mark.parametrize(("responses", "truth", "beta", "expected"), PROACTIVE_CASES)
def test_proactive_reward(
    responses: list[str], truth: str, beta: float, expected: list[float]
) -> None:
    assert scores(proactive_reward, responses, truth, beta=beta) == pytest.approx(expected)


def test_proactive_default_beta_is_the_recipe_functions_0_8() -> None:
    # Same as the beta 0.8 row above, without passing beta.
    assert scores(proactive_reward, MIXED, "1912") == pytest.approx([0.5, 1.05, 0.0, 0.45])


def test_proactive_parts_are_logged() -> None:
    out = call(proactive_reward, MIXED, "1912", beta=0.5)
    assert out[0] == pytest.approx(
        {
            "score": 0.35,
            "correct": 1.0,
            "group_acc": 0.5,
            "proactive": 1.0,
            "think": 1.0,
            "format_bonus": 0.1,
        }
    )
    assert out[2] == pytest.approx(
        {
            "score": 0.0,
            "correct": 0.0,
            "group_acc": 0.5,
            "proactive": 0.0,
            "think": 0.0,
            "format_bonus": 0.0,
        }
    )


FORMAT_BONUS_CASES = [
    # One wrong response per group (group_acc 0), beta 0.5, truth "x".
    ("y", 0.0),  # no tags: correct 0 + bonus 0
    ("<think>t</think> y", 0.05),  # think only
    ("<proactive>p</proactive> y", 0.55),  # proactive: 0.5*(1-0) + 0.05
    ("<think>t</think><proactive>p</proactive> y", 0.6),  # both: 0.5 + 0.1
    ("<THINK>t</THINK><PROACTIVE>p</PROACTIVE> y", 0.6),  # upper-case tags count
    ("<think>never closed y", 0.0),  # incomplete block: no bonus
    ("stray</think> y</proactive>", 0.0),  # stray closing tags: no bonus
    # Empty proactive block still earns the full proactive reward (recipe's weakness, kept).
    ("<proactive></proactive>", 0.55),
]


@pytest.mark.parametrize(("response", "expected"), FORMAT_BONUS_CASES)
def test_format_bonus(response: str, expected: float) -> None:
    assert scores(proactive_reward, [response], "x", beta=0.5) == pytest.approx([expected])


def test_proactive_ignores_other_kwargs_and_empty_group() -> None:
    assert scores(proactive_reward, ["x"], "x", beta=0.5, k=3, unused="y") == [1.0]
    assert call(proactive_reward, [], "x") == []


# --- adaptive difficulty -----------------------------------------------------------------------

ADAPTIVE_CASES = [
    # truth "2"; score = correct * (2 - success_rate)
    (["2", "3", "2", "4"], [1.5, 0.0, 1.5, 0.0]),  # rate 0.5 -> 1.5
    (["2", "2", "2", "3"], [1.25, 1.25, 1.25, 0.0]),  # rate 0.75 -> 1.25
    (["2", "3", "3", "3"], [1.75, 0.0, 0.0, 0.0]),  # rate 0.25 -> 1.75
    (["2", "2"], [1.0, 1.0]),  # rate 1 -> 1
    (["3", "4"], [0.0, 0.0]),
    ([], []),
]


@pytest.mark.parametrize(("responses", "expected"), ADAPTIVE_CASES)
def test_adaptive_difficulty(responses: list[str], expected: list[float]) -> None:
    assert scores(adaptive_difficulty_reward, responses, "2") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("correct", "expected"), [([], 0.5), ([1.0], 1.0), ([0.0, 0.0], 0.0), ([1.0, 0.0, 0.0], 1 / 3)]
)
def test_success_rate_is_half_for_an_empty_group(correct: list[float], expected: float) -> None:
    assert success_rate(correct) == pytest.approx(expected)


# --- relative quality --------------------------------------------------------------------------

RELATIVE_CASES = [
    # quality = correct + 0.2*min(len(formal)/100, 1)
    # "Paris" q = 1.01, "no" q = 0.004: mean 0.507, pop. std 0.503 -> +1, -1.
    (["Paris", "no"], "paris", [1.0, -1.0]),
    (["Paris", "Paris", "no", "no"], "paris", [1.0, 1.0, -1.0, -1.0]),
    # All equal quality: std 0 -> everyone 0 (not a division by zero).
    (["a", "b"], "z", [0.0, 0.0]),
    (["Paris", "<think>x</think>Paris"], "paris", [0.0, 0.0]),
    # Length saturates at 100 chars: 100 and 150 chars both give 0.2 -> std 0.
    (["x" * 100, "x" * 150], "z", [0.0, 0.0]),
    (["Paris"], "paris", [0.0]),  # a group of one has std 0
    ([], "paris", []),
]


@pytest.mark.parametrize(("responses", "truth", "expected"), RELATIVE_CASES)
def test_relative_quality(responses: list[str], truth: str, expected: list[float]) -> None:
    assert scores(relative_quality_reward, responses, truth) == pytest.approx(expected)


def test_relative_quality_logs_quality() -> None:
    out = call(relative_quality_reward, ["Paris", "no"], "paris")
    assert [o["quality"] for o in out] == pytest.approx([1.01, 0.004])


def test_relative_quality_equal_floats_do_not_blow_up() -> None:
    # 0.2 * 37/100 averaged over 3 equal values can leave float noise in the std; that must read
    # as zero spread, not as a huge standardised reward.
    assert scores(relative_quality_reward, ["y" * 37] * 3, "z") == [0.0, 0.0, 0.0]


# --- best of n ---------------------------------------------------------------------------------

BEST_OF_N_CASES = [
    # q: "Paris" 1.01, "Paris!" 1.012, "Lyon" 0.008
    (["Paris", "Paris!", "Lyon"], "paris", [0.0, 1.0, 0.0]),
    (["Paris", "Paris", "Lyon"], "paris", [1.0, 1.0, 0.0]),  # ties all get 1
    # Nothing correct: the longest wrong answer still wins (length term, recipe's behaviour).
    (["Lyon", "Marseille"], "paris", [0.0, 1.0]),
    # Max quality 0 (all formal answers empty) -> everyone 0.
    (["<think>Paris</think>", "", "<proactive>Paris?</proactive>"], "paris", [0.0, 0.0, 0.0]),
    ([], "paris", []),
]


@pytest.mark.parametrize(("responses", "truth", "expected"), BEST_OF_N_CASES)
def test_best_of_n(responses: list[str], truth: str, expected: list[float]) -> None:
    assert scores(best_of_n_reward, responses, truth) == expected


# --- pass@k ------------------------------------------------------------------------------------

PASS_AT_K_CASES = [
    # (responses, k or None for the default 1, expected)
    (["Paris", "Lyon"], None, [1.0, -0.1]),  # 1 correct >= 1: 1 / -0.1
    (["Lyon", "Nice"], None, [-0.2, -0.2]),  # 0 correct < 1: everyone wrong -> -0.2
    (["Paris", "Lyon", "Paris"], 2, [1.0, -0.1, 1.0]),  # 2 >= 2
    (["Paris", "Lyon", "Nice"], 2, [0.5, -0.2, -0.2]),  # 1 < 2: 0.5 / -0.2
    (["Paris", "Paris", "Paris", "Lyon"], 3, [1.0, 1.0, 1.0, -0.1]),
    (["Paris", "Paris", "Lyon", "Lyon"], 3, [0.5, 0.5, -0.2, -0.2]),
    ([], 2, []),
]


@pytest.mark.parametrize(("responses", "k", "expected"), PASS_AT_K_CASES)
def test_pass_at_k(responses: list[str], k: int | None, expected: list[float]) -> None:
    kwargs = {} if k is None else {"k": k}
    assert scores(pass_at_k_reward, responses, "paris", **kwargs) == expected


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_pass_at_k_rejects_bad_k(k: Any) -> None:
    with pytest.raises(UserError, match="k must be an integer >= 1"):
        call(pass_at_k_reward, ["Paris"], "paris", k=k)


@pytest.mark.parametrize("fn", list(REWARDS.values()))
def test_mismatched_ground_truths_are_a_bug(fn: Any) -> None:
    with pytest.raises(ValueError, match="one ground truth per response"):
        fn("p", ["a", "b"], ["a"], ["s", "s"], [{}, {}])


# --- load_reward -------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(REWARDS) == {
        "proactive",
        "adaptive_difficulty",
        "relative_quality",
        "best_of_n",
        "pass_at_k",
        "correctness",
        "proactive_strict",
        "ternary",
    }
    for name, fn in REWARDS.items():
        assert load_reward(name) is fn


USER_FILE = textwrap.dedent(
    """
    from dataclasses import dataclass

    @dataclass
    class Weight:  # a dataclass needs its module in sys.modules
        value: float

    def scaled_length(prompt_str, responses, ground_truths, data_sources, extra_infos,
                      scale=1.0, **reward_kwargs):
        return [{"score": Weight(scale).value * len(r), "seen_beta": reward_kwargs.get("beta", -1)}
                for r in responses]

    def wrong_signature(responses):
        return [0.0 for _ in responses]

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "my_reward.py").write_text(USER_FILE)
    (tmp_path / "broken.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_load_user_reward_relative_and_absolute(user_dir: Path) -> None:
    relative = load_reward("my_reward.py:scaled_length")
    absolute = load_reward(f"{user_dir / 'my_reward.py'}:scaled_length")
    for fn in (relative, absolute):
        # reward_kwargs flow through score_group into the user's function.
        got = score_group(fn, "p", ["ab", "abcd"], "x", "s", {}, {"scale": 2.0, "beta": 0.7})
        assert got == GroupScore(scores=[4.0, 8.0], parts=[{"seen_beta": 0.7}, {"seen_beta": 0.7}])


BAD_SPECS = [
    # (spec, fragment of the message)
    ("nope", "use one of: adaptive_difficulty, best_of_n, correctness, pass_at_k, proactive"),
    ("my_reward.py", "write it as my_reward.py:function_name"),
    ("missing.py:fn", "not found"),
    (
        "my_reward.py:absent",
        "has no 'absent'; callables defined there: Weight, scaled_length, wrong_signature",
    ),
    ("my_reward.py:NOT_CALLABLE", "is a int, not a function"),
    ("my_reward.py:", "is not a function name"),
    ("my_reward.py:wrong_signature", "must accept (prompt_str, responses"),
    ("broken.py:f", "failed to import: SyntaxError"),
]


@pytest.mark.parametrize(("spec", "fragment"), BAD_SPECS)
def test_bad_reward_specs(user_dir: Path, spec: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        load_reward(spec)
    assert fragment in str(info.value)


# --- score_group -------------------------------------------------------------------------------


def test_score_group_calls_once_with_repeated_group_inputs() -> None:
    calls: list[tuple[Any, ...]] = []

    def spy(
        prompt_str: str,
        responses: list[str],
        ground_truths: list[str],
        data_sources: list[str],
        extra_infos: list[dict[str, Any]],
        **kw: Any,
    ) -> list[float]:
        calls.append((prompt_str, responses, ground_truths, data_sources, extra_infos, kw))
        extra_infos[0]["mutated"] = True  # must not leak to the caller or to the other items
        return [0.5] * len(responses)

    extra = {"index": 7}
    got = score_group(spy, "q", ["a", "b", "c"], "gt", "sampleQA", extra, {"beta": 0.5})
    assert got == GroupScore(scores=[0.5, 0.5, 0.5], parts=[{}, {}, {}])
    assert len(calls) == 1
    prompt, responses, truths, sources, infos, kw = calls[0]
    assert (prompt, responses, truths, sources) == (
        "q",
        ["a", "b", "c"],
        ["gt"] * 3,
        ["sampleQA"] * 3,
    )
    assert infos[1:] == [{"index": 7}, {"index": 7}] and kw == {"beta": 0.5}
    assert extra == {"index": 7}


def test_score_group_empty_group_does_not_call() -> None:
    def boom(*args: Any, **kwargs: Any) -> list[float]:
        raise AssertionError("called")

    assert score_group(boom, "q", [], "gt", "s", {}, {}) == GroupScore(scores=[], parts=[])


def test_score_group_parts_keep_numbers_only() -> None:
    def fn(*args: Any, **kwargs: Any) -> list[Any]:
        return [
            {"score": 1, "flag": True, "n": 3, "note": "text", "nan": math.nan, "none": None},
            0,
        ]

    got = score_group(fn, "q", ["a", "b"], "gt", "s", {}, {})
    assert got.scores == [1.0, 0.0]
    assert got.parts == [{"flag": 1.0, "n": 3.0}, {}]
    assert all(type(s) is float for s in got.scores)


def test_score_group_accepts_numpy() -> None:
    np = pytest.importorskip("numpy")

    def fn(prompt_str: str, responses: list[str], *rest: Any, **kw: Any) -> Any:
        return np.array([0.25, 1.0])

    assert score_group(fn, "q", ["a", "b"], "gt", "s", {}, {}).scores == [0.25, 1.0]


def test_score_group_passes_built_in_parts() -> None:
    got = score_group(proactive_reward, "q", MIXED, "1912", "s", {}, {"beta": 0.5})
    assert got.scores == pytest.approx([0.35, 1.05, 0.0, 0.30])
    assert got.parts[3] == pytest.approx(
        {"correct": 0.0, "group_acc": 0.5, "proactive": 1.0, "think": 0.0, "format_bonus": 0.05}
    )


INVALID_RESULTS = [
    # (what the user's function returns for a group of 2, fragment of the message)
    ([1.0], "returned 1 scores for a group of 2"),
    ([1.0, 2.0, 3.0], "returned 3 scores for a group of 2"),
    ({"score": 1.0}, "returned a dict"),
    ("10", "returned a str"),
    (None, "returned a NoneType"),
    (1.0, "returned a float"),
    ([1.0, "1.0"], "score 1 is '1.0'"),
    ([1.0, None], "score 1 is None"),
    ([math.nan, 1.0], "score 0 is nan"),
    ([1.0, math.inf], "score 1 is inf"),
    ([{"value": 1.0}, 1.0], "item 0 is a dict without 'score'"),
    ([{"score": -math.inf}, 1.0], "score 0 is -inf"),
    ([{"score": "high"}, 1.0], "score 0 is 'high'"),
    ([[1.0], 1.0], "score 0 is [1.0]"),
]


@pytest.mark.parametrize(("result", "fragment"), INVALID_RESULTS)
def test_score_group_rejects_bad_results(result: Any, fragment: str) -> None:
    def my_bad_reward(*args: Any, **kwargs: Any) -> Any:
        return result

    with pytest.raises(UserError) as info:
        score_group(my_bad_reward, "q", ["a", "b"], "gt", "s", {}, {})
    message = str(info.value)
    assert "my_bad_reward" in message and __file__ in message  # names the function and file
    assert fragment in message


def test_score_group_lets_user_exceptions_through() -> None:
    def crashes(*args: Any, **kwargs: Any) -> list[float]:
        raise KeyError("their bug")

    with pytest.raises(KeyError, match="their bug"):
        score_group(crashes, "q", ["a"], "gt", "s", {}, {})


# --- doctests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", [tags, rewards, grading, hedge_rewards], ids=lambda m: m.__name__
)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_load_reward_rejects_kwargs_the_user_function_does_not_take(tmp_path):
    path = tmp_path / "strict.py"
    path.write_text(
        "def strict(prompt_str, responses, ground_truths, data_sources, extra_infos):\n"
        "    return [0.0 for _ in responses]\n"
    )
    spec = f"{path}:strict"
    assert load_reward(spec, {}) is not None
    with pytest.raises(UserError, match=r"does not accept the configured reward_kwargs \['beta'\]"):
        load_reward(spec, {"beta": 0.5})


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"beta": "high"}, "reward_kwargs.beta of reward 'proactive' must be a number, got 'high'"),
        ({"beta": True}, "must be a number, got True"),
        ({"beta": -0.1}, "must be within [0.0, 1.0]"),
        ({"beta": 1.5}, "must be within [0.0, 1.0]"),
    ],
)
def test_built_in_reward_kwargs_are_checked_at_start(kwargs, fragment):
    with pytest.raises(UserError) as err:
        load_reward("proactive", kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize("kwargs", [{"beta": 0}, {"beta": 1}, {"beta": 0.5, "other": "text"}])
def test_sensible_built_in_reward_kwargs_pass(kwargs):
    assert load_reward("proactive", kwargs) is not None


def test_strict_well_formed_is_a_switch_checked_at_start():
    assert load_reward("proactive_strict", {"well_formed": True, "beta": 0.5}) is not None
    with pytest.raises(UserError) as err:
        load_reward("proactive_strict", {"well_formed": "yes"})
    assert "reward_kwargs.well_formed of reward 'proactive_strict' must be true or false" in str(
        err.value
    )


def test_strict_well_formed_pays_a_drifted_hedge_as_its_answer():
    """The 100-step run's drift (docs/benchmarks.md): hedges with repeated closing tags and a
    cut-off tail. The recipe's rule pays them beta * (1 - group_acc); well_formed grades them as
    their answer, which is wrong, so a hedge pays only where the format holds."""
    from proactive_rl.shared.hedge_rewards import proactive_strict_reward

    hedge = "<proactive>No reliable record of that village's census.</proactive>"
    responses = [
        f"<think>t</think>{hedge} I cannot say.",  # well formed: pays
        f"<think>t</think>{hedge}</proactive></think> I don't know. Please che",  # drifted
        "<think>t</think> 2018",  # a right answer: group accuracy 1/3
    ]
    args = ("q", responses, ["2018"] * 3, ["x"] * 3, [{}] * 3)
    loose = proactive_strict_reward(*args, beta=0.5)
    strict = proactive_strict_reward(*args, beta=0.5, well_formed=True)
    pay = 0.5 * (1 - 1 / 3) + 0.1  # beta * (1 - group_acc) + think and proactive bonuses
    assert [round(o["score"], 4) for o in loose] == [round(pay, 4)] * 2 + [1.05]
    assert [round(o["score"], 4) for o in strict] == [round(pay, 4), 0.05, 1.05]
    assert [o["hedge"] for o in strict] == [1.0, 0.0, 0.0]
