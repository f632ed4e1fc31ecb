"""Rewards beyond the recipe, selectable by name (`reward=proactive_strict`, `reward=ternary`).

The recipe's proactive reward pays `beta * (1 - group_acc)` for any `<proactive>` block, so a
model that always answers `<proactive></proactive>` and nothing else earns 0.55 on every question
(beta 0.5): the empty hedge is the exploit. These two rewards close it in different ways:

- ``proactive_strict`` - the recipe's reward, except that a hedge must say something: a block
  with fewer than `min_hedge_words` words beyond stock phrases ("I don't know", "not sure") earns
  no hedge reward, and the response is graded as the answer it gives. With `well_formed=True` a
  hedge pays only in a well-formed response too (shared/tags.py's tag_format: a complete think
  block, no unclosed or stray tag, an answer after the tags): the 100-step GRPO run of
  docs/benchmarks.md drifted into cut-off, malformed hedges that the recipe's rule still paid.
- ``ternary`` - +1 correct, 0 for a hedge, -1 wrong (TruthRL, arXiv 2509.25760): a hedge never
  beats a right answer and always beats a wrong one, whatever the group does. `abstain` sets
  the hedge's value ("Rewarding Intellectual Humility" studies -0.25 to 0.3): answering then
  pays where the accuracy is above (1 + abstain) / 2.

Same signature as every reward (`shared/rewards.py`), and the same `grader` kwarg.
"""

from __future__ import annotations

import re
from typing import Any

from proactive_rl.shared.grading import grade_group, success_rate
from proactive_rl.shared.tags import ParsedResponse, tag_format

# The recipe's format bonuses, for a complete think block and a (paying) proactive block.
THINK_BONUS = 0.05
PROACTIVE_BONUS = 0.05
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Words that make up stock hedges; a hedge built only of these says nothing about the question.
STOCK_WORDS = frozenset(
    """i i'm im me my am is are was be it it's this that the a an to of about for on in
    not no don't dont do does did know known sure unsure uncertain certain idea answer answers
    question questions can't cannot can unable able sorry have has had any information info
    exact exactly really so well hmm maybe perhaps""".split()
)


def hedge_words(parsed: ParsedResponse) -> int:
    """How many words of the proactive block are more than a stock hedge.

    >>> from proactive_rl.shared.tags import parse_response
    >>> hedge_words(parse_response("<proactive>I'm not sure.</proactive> Lyon"))
    0
    >>> hedge_words(parse_response("<proactive>No records of the 2010 award</proactive> x"))
    3
    """
    words = _WORD.findall(parsed.proactive_text.lower().replace("\u2019", "'"))
    return sum(1 for w in words if w not in STOCK_WORDS)


def hedge_scores(
    parsed: list[ParsedResponse], correct: list[float], beta: float, hedged: list[bool]
) -> list[dict[str, float]]:
    """The recipe's proactive rule over a graded group: a response that `hedged` earns
    beta * (1 - group_acc), any other its correctness; plus the format bonuses (the proactive
    bonus only for a paying hedge). Shared by `proactive` and `proactive_strict`, which differ
    only in what counts as a hedge."""
    group_acc = success_rate(correct)
    out: list[dict[str, float]] = []
    for p, c, hedge in zip(parsed, correct, hedged, strict=True):
        bonus = THINK_BONUS * p.think + PROACTIVE_BONUS * hedge
        out.append(
            {
                "score": beta * (1.0 - group_acc) + bonus if hedge else c + bonus,
                "correct": c,
                "group_acc": group_acc,
                "proactive": float(p.proactive),
                "think": float(p.think),
                "format_bonus": bonus,
            }
        )
    return out


def proactive_strict_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    beta: float = 0.8,
    min_hedge_words: int = 3,
    grader: str = "substring",
    well_formed: bool = False,
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """The proactive reward with a hedge that must say something.

    A proactive block with at least `min_hedge_words` words beyond stock phrases scores as in the
    recipe: beta * (1 - group_acc) + format bonus. An empty or stock-only block earns no hedge
    reward and no proactive bonus: the response scores as its answer (correct + think bonus).
    With `well_formed`, so does a hedge in a response whose tags are not well formed (tag_format).

    Worked example, beta 0.5, truth "Paris", one of four correct (group_acc 0.25):
    a real hedge -> 0.5 * 0.75 + 0.05 = 0.425; an empty hedge with no answer -> 0;
    "I don't know." as the hedge, then "Paris" -> 1 (graded as its answer); "Lyon" -> 0.

    >>> out = proactive_strict_reward(
    ...     "Capital of France?",
    ...     ["<proactive>No reliable record of French capitals here.</proactive>",
    ...      "<proactive></proactive>",
    ...      "<proactive>I don't know.</proactive> Paris", "Lyon"],
    ...     ["Paris"] * 4, ["sampleQA"] * 4, [{}] * 4, beta=0.5)
    >>> [round(o["score"], 4) for o in out]
    [0.425, 0.0, 1.0, 0.0]
    >>> [o["hedge"] for o in out]
    [1.0, 0.0, 0.0, 0.0]

    With well_formed=True, a hedge whose response repeats a closing tag, or has no think block,
    is graded as its answer instead:

    >>> hedge = "<proactive>No record of the 1901 census.</proactive>"
    >>> drift = [f"<think>t</think>{hedge} x", f"<think>t</think>{hedge}</proactive> x",
    ...          hedge + " x"]
    >>> [[o["hedge"] for o in proactive_strict_reward(
    ...     "q", drift, ["1901"] * 3, ["x"] * 3, [{}] * 3, beta=0.5, well_formed=w)]
    ...  for w in (False, True)]
    [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    """
    parsed, correct = grade_group(responses, ground_truths, grader)
    hedged = [
        p.proactive and hedge_words(p) >= min_hedge_words and (not well_formed or tag_format(r)[0])
        for p, r in zip(parsed, responses, strict=True)
    ]
    out = hedge_scores(parsed, correct, beta, hedged)
    for item, hedge in zip(out, hedged, strict=True):
        item["hedge"] = float(hedge)
    return out


def ternary_reward(
    prompt_str: str,
    responses: list[str],
    ground_truths: list[str],
    data_sources: list[str],
    extra_infos: list[dict[str, Any]],
    abstain: float = 0.0,
    grader: str = "substring",
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """+1 for a correct answer, `abstain` (0) for a hedge (a proactive block), -1 for a wrong
    answer.

    No group statistics and no format bonus: with abstain 0, hedging pays exactly when the
    model would otherwise be wrong, in expectation wherever its accuracy is below one half; a
    positive abstain moves that line up to (1 + abstain) / 2.

    >>> out = ternary_reward(
    ...     "", ["Paris", "<proactive>Unsure.</proactive> Paris", "Lyon"],
    ...     ["paris"] * 3, [""] * 3, [{}] * 3)
    >>> [o["score"] for o in out]
    [1.0, 0.0, -1.0]
    >>> [o["score"] for o in ternary_reward(
    ...     "", ["<proactive>Unsure.</proactive>"], ["paris"], [""], [{}], abstain=0.25)]
    [0.25]
    """
    parsed, correct = grade_group(responses, ground_truths, grader)
    return [
        {
            "score": float(abstain) if p.proactive else (1.0 if c else -1.0),
            "correct": c,
            "proactive": float(p.proactive),
        }
        for p, c in zip(parsed, correct, strict=True)
    ]
