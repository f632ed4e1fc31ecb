"""Group-aware reward functions, and how a run picks and calls one.

Every reward sees all n responses to one prompt at once, with the signature users already write
against in the veRL recipe (so their files work here unmodified)::

    fn(prompt_str, responses, ground_truths, data_sources, extra_infos, **reward_kwargs)
        -> list[float] | list[dict]   # a dict carries "score" plus extra numbers to log

`ground_truths`, `data_sources` and `extra_infos` hold one entry per response (the same value
repeated within a group). Built-in rewards ignore reward kwargs they do not use, because the
config passes the same kwargs (e.g. `beta`) whichever reward is selected.

Grading (shared by all built-ins, `shared/grading.py`): by default a response is correct when
the ground truth, stripped and lower-cased, is a substring of its lower-cased formal answer
(`tags.formal_answer`). That is the recipe's rule with its known weaknesses kept, so results stay
comparable: "2" matches "2012", and listing many candidates is rewarded. Every built-in takes
`grader="normalised"` (a reward kwarg) for the stricter rule, and ground truths may list aliases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.grading import GRADERS, grade_group, success_rate
from proactive_rl.shared.hedge_rewards import hedge_scores, proactive_strict_reward, ternary_reward
from proactive_rl.shared.tags import ParsedResponse

RewardFn: TypeAlias = Callable[..., "list[float] | list[dict[str, Any]]"]

# relative_quality / best_of_n: a long formal answer earns up to LENGTH_WEIGHT extra quality,
# saturating at LENGTH_SATURATION characters.
LENGTH_WEIGHT = 0.2
LENGTH_SATURATION = 100
# Quality spreads below this are float noise from averaging equal values, not a real spread;
# dividing by them would turn rounding error into huge advantages.
_STD_EPS = 1e-9


def _quality(parsed: ParsedResponse, correct: float) -> float:
    return correct + LENGTH_WEIGHT * min(len(parsed.formal) / LENGTH_SATURATION, 1.0)


def proactive_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    beta: float = 0.8,
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """The default reward: abstaining pays more the harder the question is for this group.

    Per response, with group_acc the mean correctness over the group and
    format_bonus = 0.05 * has complete think block + 0.05 * has complete proactive block::

        score = beta * (1 - group_acc) + format_bonus   if it has a proactive block
              = correct + format_bonus                   otherwise

    beta defaults to 0.8 as in the recipe's function; the pipeline config passes 0.5. An empty
    proactive block still counts as proactive (the recipe's known weakness, kept).

    Worked example, beta 0.5, ground truth "Paris", two of four correct so group_acc = 0.5:
    proactive with think -> 0.5 * 0.5 + 0.1 = 0.35; correct with think -> 1 + 0.05;
    correct bare -> 1; wrong bare -> 0.

    >>> out = proactive_reward(
    ...     "Capital of France?",
    ...     ["<think>t</think><proactive>Unsure.</proactive> Maybe Lyon",
    ...      "<think>t</think> Paris", "Paris", "London"],
    ...     ["Paris"] * 4, ["sampleQA"] * 4, [{}] * 4, beta=0.5)
    >>> [round(o["score"], 4) for o in out]
    [0.35, 1.05, 1.0, 0.0]
    >>> sorted(out[0].items())  # doctest: +NORMALIZE_WHITESPACE
    [('correct', 0.0), ('format_bonus', 0.1), ('group_acc', 0.5), ('proactive', 1.0),
     ('score', 0.35), ('think', 1.0)]
    """
    parsed, correct = grade_group(responses, ground_truths, grader)
    return hedge_scores(parsed, correct, beta, [p.proactive for p in parsed])


def adaptive_difficulty_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """A correct answer is worth more when the group mostly failed: correct * (2 - success_rate).

    Ground truth "2", two of four correct -> success_rate 0.5 -> correct ones score 1.5.

    >>> out = adaptive_difficulty_reward("", ["2", "3", "2", "4"], ["2"] * 4, [""] * 4, [{}] * 4)
    >>> [o["score"] for o in out]
    [1.5, 0.0, 1.5, 0.0]
    """
    _, correct = grade_group(responses, ground_truths, grader)
    rate = success_rate(correct)
    return [{"score": c * (2.0 - rate), "correct": c, "success_rate": rate} for c in correct]


def relative_quality_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """Quality standardised within the group: (q - mean) / std, 0 for all if std is 0.

    quality q = correct + 0.2 * min(len(formal answer) / 100, 1); std is the population std
    (ddof 0, as numpy's default in the recipe).

    "Paris" (correct, 5 chars): q = 1 + 0.2 * 0.05 = 1.01; "no" (wrong, 2 chars): q = 0.004.
    mean 0.507, std 0.503, so the scores are +1 and -1.

    >>> out = relative_quality_reward("", ["Paris", "no"], ["paris"] * 2, [""] * 2, [{}] * 2)
    >>> [round(o["score"], 6) for o in out], [round(o["quality"], 6) for o in out]
    ([1.0, -1.0], [1.01, 0.004])
    """
    parsed, correct = grade_group(responses, ground_truths, grader)
    quality = [_quality(p, c) for p, c in zip(parsed, correct, strict=True)]
    if not quality:
        return []
    mean = statistics.fmean(quality)
    std = statistics.pstdev(quality)
    return [
        {"score": (q - mean) / std if std > _STD_EPS else 0.0, "correct": c, "quality": q}
        for q, c in zip(quality, correct, strict=True)
    ]


def best_of_n_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """1 for every response whose quality equals the group's best, when that best is > 0; else 0.

    Quality is `relative_quality_reward`'s, so length breaks ties and, when nothing is correct,
    the longest wrong answer still scores 1 (the recipe's behaviour). Only a group whose formal
    answers are all empty has best 0, and then everything scores 0.

    "Paris" q = 1.01, "Paris!" q = 1.012 (longer), "Lyon" q = 0.008:

    >>> out = best_of_n_reward("", ["Paris", "Paris!", "Lyon"], ["paris"] * 3, [""] * 3, [{}] * 3)
    >>> [o["score"] for o in out]
    [0.0, 1.0, 0.0]
    """
    parsed, correct = grade_group(responses, ground_truths, grader)
    quality = [_quality(p, c) for p, c in zip(parsed, correct, strict=True)]
    best = max(quality, default=0.0)
    return [
        {"score": 1.0 if best > 0 and q == best else 0.0, "correct": c, "quality": q}
        for q, c in zip(quality, correct, strict=True)
    ]


def pass_at_k_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    k: int = 1,
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """Reward the group reaching k correct answers.

    If at least k responses are correct: 1 for correct, -0.1 for wrong. Otherwise 0.5 for correct,
    -0.2 for wrong. k defaults to 1 ("the group solved it at all"); with k = 1 the second branch
    only applies to groups with no correct answer, which all score -0.2 and so get zero
    advantage. Raise k (e.g. to n / 2) to pay less for rare lucky hits.

    k = 2: two correct reach k -> [1, -0.1, 1]; one correct does not -> [0.5, -0.2, -0.2].

    >>> [o["score"] for o in pass_at_k_reward(
    ...     "", ["Paris", "Lyon", "Paris"], ["paris"] * 3, [""] * 3, [{}] * 3, k=2)]
    [1.0, -0.1, 1.0]
    >>> [o["score"] for o in pass_at_k_reward(
    ...     "", ["Paris", "Lyon", "Nice"], ["paris"] * 3, [""] * 3, [{}] * 3, k=2)]
    [0.5, -0.2, -0.2]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"pass_at_k reward: k must be an integer >= 1, got {k!r}")
    _, correct = grade_group(responses, ground_truths, grader)
    num_correct = sum(correct)
    reached = num_correct >= k
    good, bad = (1.0, -0.1) if reached else (0.5, -0.2)
    return [
        {"score": good if c else bad, "correct": c, "num_correct": num_correct} for c in correct
    ]


def correctness_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[float]:
    """Plain correctness of the formal answer: 1.0 or 0.0 (no group statistics, no bonus).

    >>> correctness_reward(
    ...     "", ["<think>Paris?</think> Lyon", "Paris"], ["paris"] * 2, [""] * 2, [{}] * 2)
    [0.0, 1.0]
    """
    return grade_group(responses, ground_truths, grader)[1]


REWARDS: dict[str, RewardFn] = {
    "proactive": proactive_reward,
    "adaptive_difficulty": adaptive_difficulty_reward,
    "relative_quality": relative_quality_reward,
    "best_of_n": best_of_n_reward,
    "pass_at_k": pass_at_k_reward,
    "correctness": correctness_reward,
    "proactive_strict": proactive_strict_reward,
    "ternary": ternary_reward,
}


def used_kwargs(spec: str, reward_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments a built-in reward reads (its named parameters), for reports: the
    stages' default beta means nothing to ternary. Every one for a reward of the user's.

    >>> used_kwargs("ternary", {"beta": 0.5, "abstain": 0.1})
    {'abstain': 0.1}
    >>> used_kwargs("proactive", {"beta": 0.3})
    {'beta': 0.3}
    """
    if spec not in REWARDS:
        return dict(reward_kwargs)
    named = inspect.signature(REWARDS[spec]).parameters
    return {
        k: v
        for k, v in reward_kwargs.items()
        if k in named and named[k].kind != named[k].VAR_KEYWORD
    }


def load_reward(spec: str, reward_kwargs: Mapping[str, Any] | None = None) -> RewardFn:
    """Resolve a reward spec: a built-in name, or `path/to/file.py:function_name`, and check
    that it accepts the users' arguments plus `reward_kwargs` (so a mismatch fails at startup).

    Relative paths are relative to the current directory. The file is imported on every call
    (no caching), so an edited file is picked up by the next run.

    >>> load_reward("proactive") is proactive_reward
    True
    """
    if spec in REWARDS:
        _check_builtin_kwargs(spec, dict(reward_kwargs or {}))
        return REWARDS[spec]  # built-ins take **reward_kwargs and ignore what they don't use
    path, fn_name = _file_and_function(spec)
    fn = _function_in(path, fn_name)
    _check_signature(fn, spec, dict(reward_kwargs or {}))
    return fn


def _file_and_function(spec: str) -> tuple[Path, str]:
    """The existing file and the function name of a `path/to/file.py:function_name` spec."""
    valid = ", ".join(sorted(REWARDS))
    if ":" not in spec:
        if spec.endswith(".py"):
            raise UserError(
                f"reward {spec!r} names a file but no function; write it as {spec}:function_name"
            )
        raise UserError(
            f"unknown reward {spec!r}; use one of: {valid}, or path/to/file.py:function_name"
        )
    # rpartition: the path may itself contain ':'; the function name cannot.
    file_part, _, fn_name = spec.rpartition(":")
    if not fn_name.isidentifier():
        raise UserError(
            f"reward {spec!r}: {fn_name!r} after ':' is not a function name; "
            "write it as path/to/file.py:function_name"
        )
    path = Path(file_part).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_file():
        raise UserError(
            f"reward file {file_part!r} not found (looked at {path}); "
            f"give a path relative to {Path.cwd()} or an absolute one, or a built-in: {valid}"
        )
    return path, fn_name


def _function_in(path: Path, fn_name: str) -> RewardFn:
    """`fn_name` from the file at `path`, imported afresh."""
    module = _import_file(path)
    if not hasattr(module, fn_name):
        # Only what the file itself defines, not what it imported.
        defined = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and getattr(v, "__module__", None) == module.__name__
        )
        raise UserError(
            f"reward file {path} has no {fn_name!r}; callables defined there: "
            f"{', '.join(defined) or '(none)'}"
        )
    fn = getattr(module, fn_name)
    if not callable(fn):
        raise UserError(f"{fn_name!r} in {path} is a {type(fn).__name__}, not a function")
    return fn


def _import_file(path: Path) -> Any:
    # One module name per file path, registered in sys.modules so dataclasses and pickling
    # inside the user's file work like in a normal import.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"proactive_rl_user_reward_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"reward file {path} cannot be imported; it must be a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UserError(
            f"reward file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


# The beta the pipeline passes (seed-pipeline.md: reward_kwargs.beta=0.5), the one default of
# the rollout's and the evaluation's reward_kwargs; the functions keep the recipe's own 0.8.
PIPELINE_BETA = 0.5

# The range a built-in's `beta` (the pay for a hedge on a question the group never answers)
# makes sense in: above 1 a hedge would pay more than a correct answer.
BETA_RANGE = (0.0, 1.0)
# The ranges of the built-ins' bounded kwargs: (low, high, what the value is). ternary's
# abstain outside [-1, 1] would make a hedge worse than a wrong answer or better than a right one.
KWARG_RANGES: dict[str, tuple[float, float, str]] = {
    "beta": (*BETA_RANGE, "the pay for hedging on a question the group never answers"),
    "abstain": (-1.0, 1.0, "the pay for a hedge, between a wrong answer's -1 and a right one's +1"),
}


def _check_builtin_kwargs(spec: str, reward_kwargs: dict[str, Any]) -> None:
    """A built-in's numeric keyword arguments are numbers, its switches booleans, and `beta`
    and `abstain` are in
    KWARG_RANGES: a text beta would otherwise crash the reward at the first hedge, long after
    start-up."""
    params = inspect.signature(REWARDS[spec]).parameters
    grader = reward_kwargs.get("grader", "substring")
    if grader not in GRADERS:
        raise UserError(
            f"reward_kwargs.grader of reward {spec!r} must be one of {', '.join(GRADERS)}, "
            f"got {grader!r}"
        )
    for name, value in reward_kwargs.items():
        param = params.get(name)
        if param is not None and isinstance(param.default, bool):
            if not isinstance(value, bool):
                raise UserError(
                    f"reward_kwargs.{name} of reward {spec!r} must be true or false, got {value!r}"
                )
            continue
        numeric = name in KWARG_RANGES or (
            param is not None and isinstance(param.default, int | float)
        )
        if not numeric:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(
                f"reward_kwargs.{name} of reward {spec!r} must be a number, got {value!r}"
            )
        if name in KWARG_RANGES and not KWARG_RANGES[name][0] <= value <= KWARG_RANGES[name][1]:
            low, high, meaning = KWARG_RANGES[name]
            raise UserError(
                f"reward_kwargs.{name} of reward {spec!r} must be within [{low}, {high}] "
                f"({meaning}), got {value!r}"
            )


def _check_signature(fn: Callable[..., Any], spec: str, reward_kwargs: dict[str, Any]) -> None:
    # Catch a wrong signature at startup rather than at the first rollout minutes later.
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins/C callables without a signature: find out when called
    try:
        sig.bind("", [], [], [], [])
    except TypeError as exc:
        raise UserError(
            f"reward {spec!r} must accept (prompt_str, responses, ground_truths, data_sources, "
            f"extra_infos, **reward_kwargs); its signature is {sig}: {exc}"
        ) from None
    try:
        sig.bind("", [], [], [], [], **reward_kwargs)
    except TypeError as exc:
        raise UserError(
            f"reward {spec!r} does not accept the configured reward_kwargs "
            f"{sorted(reward_kwargs)} ({exc}); add **reward_kwargs to its signature or set "
            "reward_kwargs to what it takes (e.g. --set 'reward_kwargs={}')"
        ) from None


@dataclass(frozen=True)
class GroupScore:
    """Validated output of one reward call: a score and the logged numeric parts per response."""

    scores: list[float]
    parts: list[dict[str, float]]


def score_group(
    fn: RewardFn,
    prompt: str,
    responses: list[str],
    ground_truth: str,
    data_source: str,
    extra_info: dict[str, Any],
    reward_kwargs: dict[str, Any],
) -> GroupScore:
    """Call `fn` once on the whole group of one prompt and validate what it returns.

    The result must have one item per response; each item a finite number or a dict with a
    finite numeric "score". Other numeric dict fields become `parts` (bools as 0/1); non-numeric
    or non-finite extra fields are dropped, since they are for logging only. An empty group
    returns an empty GroupScore without calling `fn`. Exceptions raised inside `fn` propagate
    unchanged so the user sees their own traceback.

    >>> score_group(correctness_reward, "q", ["Paris", "Lyon"], "paris", "sampleQA", {}, {})
    GroupScore(scores=[1.0, 0.0], parts=[{}, {}])
    """
    n = len(responses)
    if n == 0:
        return GroupScore(scores=[], parts=[])
    # Copies, so a reward that mutates its inputs cannot leak into the caller or across items.
    result = fn(
        prompt,
        list(responses),
        [ground_truth] * n,
        [data_source] * n,
        [dict(extra_info) for _ in range(n)],
        **reward_kwargs,
    )
    who = _describe(fn)
    scored = [_score_item(item, i, who) for i, item in enumerate(_items(result, n, who))]
    return GroupScore(scores=[score for score, _ in scored], parts=[parts for _, parts in scored])


def _items(result: Any, n: int, who: str) -> list[Any]:
    """The reward's result as a list of n items, or a UserError naming the reward."""
    if isinstance(result, (str, bytes, Mapping)) or not _is_iterable(result):
        raise UserError(
            f"reward {who} returned a {type(result).__name__}; "
            f"it must return a list of {n} floats or dicts with a 'score'"
        )
    items = list(result)
    if len(items) != n:
        raise UserError(f"reward {who} returned {len(items)} scores for a group of {n} responses")
    return items


def _score_item(item: Any, i: int, who: str) -> tuple[float, dict[str, float]]:
    """Item i's finite score and its finite numeric extra fields (the logged parts)."""
    if isinstance(item, Mapping):
        if "score" not in item:
            raise UserError(
                f"reward {who}: item {i} is a dict without 'score' (keys: {sorted(item)})"
            )
        raw_score = item["score"]
        extras = {
            str(key): value
            for key, value in ((k, _as_float(v)) for k, v in item.items() if k != "score")
            if value is not None and math.isfinite(value)
        }
    else:
        raw_score, extras = item, {}
    score = _as_float(raw_score)
    if score is None or not math.isfinite(score):
        raise UserError(
            f"reward {who}: score {i} is {raw_score!r}; every score must be a finite number"
        )
    return score, extras


def _as_float(value: Any) -> float | None:
    """float(value) for numbers (incl. bools, numpy scalars, 1-element tensors), else None."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor with several elements
        return None


def _is_iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    code = getattr(fn, "__code__", None)
    return f"{name} ({code.co_filename})" if code is not None else name
