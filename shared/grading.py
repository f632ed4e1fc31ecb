"""Graders: is a formal answer (tags removed, `tags.formal_answer`) correct for a ground truth?

Two rules, selectable by name wherever a reward or the eval grades:

- ``substring`` - the recipe's rule, kept for comparability: the ground truth, stripped and
  lower-cased, is a substring of the lower-cased answer. Gamed by short truths ("2" is in
  "2012") and by listing several candidates.
- ``normalised`` - both sides normalised (case, accents, punctuation, the articles a/an/the,
  whitespace, number formats such as "1,000" or "3.0"), the truth must appear as whole words,
  and the answer must be a single answer: one that lists several candidates ("Paris or Lyon",
  "Paris, Lyon, Nice", a bulleted list) is wrong even when one of them is right.

A ground truth may be a list of aliases (any one matches): a Python list, or a string holding a
JSON list (how a parquet string column carries them, e.g. `'["NYC", "New York City"]'`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeAlias

from proactive_rl.shared.tags import ParsedResponse, parse_response

Truth: TypeAlias = "str | Sequence[str]"

_WHITESPACE = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TRAILING_ZEROS = re.compile(r"\b(\d+)\.0+\b")
_PUNCT = re.compile(r"[^\w\s]")
# Candidate lists: alternatives joined by "or"/"either", bullets or numbered lines, or three and
# more comma/semicolon items ("Paris, France" is one answer; "Paris, Lyon, Nice" is a list).
_OR = re.compile(r"\b(?:or|either)\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.MULTILINE)
_ITEM_SPLIT = re.compile(r"[;,]|\n")


def truths_of(ground_truth: Truth) -> list[str]:
    """The aliases of a ground truth: a list as given, a JSON-list string decoded, else [it].

    >>> truths_of("Paris"), truths_of('["NYC", "New York City"]'), truths_of(["a", "b"])
    (['Paris'], ['NYC', 'New York City'], ['a', 'b'])
    """
    if isinstance(ground_truth, str):
        text = ground_truth.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                return [ground_truth]
            if isinstance(decoded, list) and all(isinstance(x, str | int | float) for x in decoded):
                return [str(x) for x in decoded]
        return [ground_truth]
    return [str(x) for x in ground_truth]


def is_correct(formal: str, ground_truth: Truth) -> bool:
    """The recipe's substring rule, for any alias.

    An empty ground truth is never correct ("" is in everything). Whitespace runs inside the
    truth are collapsed because the formal answer's are.

    >>> is_correct("It was Michio Sugeno.", " michio sugeno ")
    True
    >>> is_correct("In 2012", "2")  # the recipe's known weakness, kept on purpose
    True
    >>> is_correct("anything", "   ")
    False
    """
    answer = formal.lower()
    for truth in truths_of(ground_truth):
        text = _WHITESPACE.sub(" ", truth).strip().lower()
        if text and text in answer:
            return True
    return False


def normalise(text: str) -> str:
    """Lower-case, strip accents, thousands separators, trailing ".0", punctuation, articles
    and extra whitespace.

    >>> normalise("The Eiffel  Tower!"), normalise("1,000.0 m"), normalise("Gödel's")
    ('eiffel tower', '1000 m', 'godel s')
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _THOUSANDS.sub("", text)
    text = _TRAILING_ZEROS.sub(r"\1", text)
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def is_single_answer(formal: str) -> bool:
    """False when the answer offers several candidates instead of one.

    >>> is_single_answer("Paris, France"), is_single_answer("Paris or Lyon")
    (True, False)
    >>> is_single_answer("Paris, Lyon, Nice"), is_single_answer("- Paris\\n- Lyon")
    (False, False)
    """
    if _OR.search(formal) or len(_BULLET.findall(formal)) >= 2:
        return False
    items = [item for item in _ITEM_SPLIT.split(formal) if item.strip()]
    return len(items) < 3


def normalised_correct(formal: str, ground_truth: Truth) -> bool:
    """Whole-word match of a normalised alias in a single normalised answer.

    >>> normalised_correct("It was THE Eiffel-Tower.", "Eiffel Tower")
    True
    >>> normalised_correct("In 2012", "2"), normalised_correct("1,000 people", "1000")
    (False, True)
    >>> normalised_correct("Paris or Lyon", "Paris")  # two candidates: not an answer
    False
    """
    if not is_single_answer(formal):
        return False
    answer = f" {normalise(formal)} "
    for truth in truths_of(ground_truth):
        text = normalise(truth)
        if text and f" {text} " in answer:
            return True
    return False


GRADERS: dict[str, Callable[[str, Truth], bool]] = {
    "substring": is_correct,
    "normalised": normalised_correct,
}


def grader(name: str) -> Callable[[str, Truth], bool]:
    """The grader called `name`; a ValueError naming the choices otherwise (config validation
    turns it into a message for the user)."""
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; use one of: {', '.join(GRADERS)}")
    return GRADERS[name]


def success_rate(correct: Sequence[float]) -> float:
    """Mean correctness of a group; 0.5 (no information) for an empty group.

    >>> success_rate([1.0, 0.0, 0.0, 0.0]), success_rate([])
    (0.25, 0.5)
    """
    return sum(correct) / len(correct) if correct else 0.5


def grade_group(
    responses: list[str], ground_truths: list[Truth], grader_name: str = "substring"
) -> tuple[list[ParsedResponse], list[float]]:
    """Parse every response of a group and grade its formal answer: (parsed, correct as 0/1)."""
    if len(responses) != len(ground_truths):
        raise ValueError(
            f"{len(responses)} responses but {len(ground_truths)} ground truths; "
            "a reward needs one ground truth per response"
        )
    correct_fn = grader(grader_name)
    parsed = [parse_response(r) for r in responses]
    correct = [float(correct_fn(p.formal, t)) for p, t in zip(parsed, ground_truths, strict=True)]
    return parsed, correct
