"""Warm-up SFT conversations built from question/answer pairs (`sft_source=build`).

For users without tagged SFT data: every RL train question becomes one conversation in the users'
SFT format. The assistant turn always thinks briefly about what kind of answer is asked for;
a question the model is likely to know gets its plain answer, any other question gets a
<proactive> block that admits uncertainty and a short plain "I don't know ..." answer.

Which questions count as known is decided by category (`known_categories`) or, better, by the
model's measured accuracy (`known_from`: a samples.jsonl written by `proactive eval`).
Everything is seeded per question, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from proactive_rl.shared.errors import UserError
from proactive_rl.stages.prep.sources import JsonlRow, Question, read_jsonl

logger = logging.getLogger(__name__)

# What the question asks for, decided from its wording (first match wins).
_ARITHMETIC = re.compile(r"^\s*what is (-?\d+) ([-+*/x×]) (-?\d+)\s*\?\s*$", re.IGNORECASE)
_KIND_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("number", re.compile(r"\bhow (many|much|old|long|far|tall|high|big)\b", re.IGNORECASE)),
    ("year", re.compile(r"\b(what|which|in what|in which) year\b|\byear did\b", re.IGNORECASE)),
    (
        "date",
        re.compile(r"\bwhen\b|\b(what|which) (day|month|date)\b|\bon what\b", re.IGNORECASE),
    ),
    ("person", re.compile(r"^\s*(who|whom|whose)\b|\bto whom\b", re.IGNORECASE)),
    (
        "place",
        re.compile(
            r"\bwhere\b|\bwhich (country|city|town|village|state|province|region|place)\b",
            re.IGNORECASE,
        ),
    ),
]
KIND_PHRASES = {
    "arithmetic": "a calculation",
    "number": "an exact number",
    "year": "a specific year",
    "date": "a specific date",
    "person": "the name of a specific person",
    "place": "a specific place",
    "fact": "a specific fact",
}
# The plain answer after a proactive block: short, no guess, always starting "I don't know".
UNKNOWN_ANSWERS = {
    "arithmetic": "I don't know the exact result.",
    "number": "I don't know the exact number.",
    "year": "I don't know the exact year.",
    "date": "I don't know the exact date.",
    "person": "I don't know who that is.",
    "place": "I don't know the exact place.",
    "fact": "I don't know the exact answer.",
}
# Several phrasings, so the model learns the behaviour rather than one string.
KNOWN_ARITHMETIC_THINK = [
    "This is simple arithmetic: {expr} = {answer}.",
    "A quick calculation: {expr} = {answer}.",
    "I can work this out directly: {expr} = {answer}.",
]
KNOWN_THINK = [
    "This asks for {phrase}. It is well-known general knowledge, so I can answer directly.",
    "The question wants {phrase}, and this is a widely known fact I am confident about.",
    "This is common knowledge: it asks for {phrase}, and I know it.",
]
UNKNOWN_THINK = [
    "This asks for {phrase}. It is a narrow detail I have no reliable record of, "
    "so I should not guess.",
    "The question wants {phrase}. I am not confident I know this, and a guess could easily "
    "be wrong.",
    "This needs {phrase}, an obscure detail I cannot recall reliably, so I should say so "
    "rather than invent an answer.",
]
PROACTIVE_TEXT = [
    "I don't have reliable information about this, so I can't give {phrase} with confidence.",
    "I'm not sure about this detail and would rather not guess.",
    "I can't verify this from what I know, and an invented answer could mislead you.",
]
PROACTIVE_ADVICE = [
    "A trusted reference source would be the place to check.",
    "Please check an authoritative source, such as an encyclopedia or official records.",
    "An official record or a reliable reference work should have the exact answer.",
]


def question_kind(question: str) -> str:
    """What kind of answer a question asks for, from its wording.

    >>> question_kind("What is 17 + 25?"), question_kind("In what year did the station close?")
    ('arithmetic', 'year')
    >>> question_kind("Who was the first mayor?"), question_kind("What is the capital of Peru?")
    ('person', 'fact')
    """
    if _ARITHMETIC.match(question):
        return "arithmetic"
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(question):
            return kind
    return "fact"


def assistant_turn(question: str, answer: str, known: bool, rng: random.Random) -> str:
    """The assistant's reply: think, then the plain answer (known) or proactive + "I don't know".

    >>> print(assistant_turn("What is 2 + 3?", "5", True, random.Random(0)))
    <think>
    A quick calculation: 2 + 3 = 5.
    </think>
    <BLANKLINE>
    5
    """
    kind = question_kind(question)
    phrase = KIND_PHRASES[kind]
    plain = " ".join(answer.split())
    if known:
        arithmetic = _ARITHMETIC.match(question)
        if arithmetic:
            expr = f"{arithmetic.group(1)} {arithmetic.group(2)} {arithmetic.group(3)}"
            think = rng.choice(KNOWN_ARITHMETIC_THINK).format(expr=expr, answer=plain)
        else:
            think = rng.choice(KNOWN_THINK).format(phrase=phrase)
        return f"<think>\n{think}\n</think>\n\n{plain}"
    think = rng.choice(UNKNOWN_THINK).format(phrase=phrase)
    proactive = rng.choice(PROACTIVE_TEXT).format(phrase=phrase)
    advice = rng.choice(PROACTIVE_ADVICE)
    return (
        f"<think>\n{think}\n</think>\n\n<proactive>\n{proactive} {advice}\n</proactive>\n\n"
        f"{UNKNOWN_ANSWERS[kind]}"
    )


def build_conversation(
    question: Question, known: bool, seed: int, system_prompt: str
) -> dict[str, Any]:
    """One SFT row in the users' format for an RL question ({question, answer, sub_category,
    index}); `id` is the question's RL index. Seeded per question: adding or dropping other
    questions does not change this one's text."""
    rng = random.Random(f"{seed}:{question['index']}:{question['question']}")
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": question["question"]},
            {
                "role": "assistant",
                "content": assistant_turn(question["question"], question["answer"], known, rng),
            },
        ],
        "id": question["index"],
        "sub_category": question["sub_category"],
    }


@dataclass
class Measured:
    """One question's measured results in a known_from file."""

    correct: int
    total: int
    question: str | None
    lineno: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


class KnownFrom(NamedTuple):
    """A known_from file read: measured results per question_index, and the checkpoint used."""

    measured: dict[int, Measured]
    checkpoint: str | None


def read_known_from(path: Path, checkpoint: str | None) -> KnownFrom:
    """Measured results per question_index from an eval samples.jsonl, and the checkpoint used.

    Rows may carry a "checkpoint" key (one file for several checkpoints): `checkpoint` selects
    one, None takes the first in the file. Problems name the file and line.
    """
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"{path}: no rows; expected eval samples with question_index and correct")
    for row in rows:
        check_known_row(path, row.lineno, row.obj)
    selected = select_checkpoint(path, _checkpoints(rows), checkpoint)
    return KnownFrom(_tally(rows, selected), selected)


def check_known_row(path: Path, lineno: int, obj: dict[str, Any]) -> None:
    """An eval sample needs an integer question_index, a 0/1 `correct`, a text `question` if any."""
    index, correct = obj.get("question_index"), obj.get("correct")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise UserError(f"{path}:{lineno}: needs an integer 'question_index' (got {index!r})")
    if not isinstance(correct, bool) and correct not in (0, 1):
        raise UserError(f"{path}:{lineno}: needs a boolean 'correct' (got {correct!r})")
    if "question" in obj and not isinstance(obj["question"], str):
        raise UserError(f"{path}:{lineno}: 'question' must be a string")


def _checkpoint_of(obj: dict[str, Any]) -> str | None:
    return str(obj["checkpoint"]) if obj.get("checkpoint") is not None else None


def _checkpoints(rows: Sequence[JsonlRow]) -> list[str]:
    """The checkpoints the rows name, in order of first appearance."""
    seen: list[str] = []
    for row in rows:
        name = _checkpoint_of(row.obj)
        if name is not None and name not in seen:
            seen.append(name)
    return seen


def select_checkpoint(path: Path, seen: list[str], checkpoint: str | None) -> str | None:
    """`checkpoint` if the file holds it, else the file's first (None: rows without one)."""
    if checkpoint is not None and checkpoint not in seen:
        found = ", ".join(seen) if seen else "none (its rows have no 'checkpoint' key)"
        raise UserError(f"{path}: no rows of checkpoint {checkpoint!r}; checkpoints: {found}")
    selected = checkpoint if checkpoint is not None else (seen[0] if seen else None)
    if len(seen) > 1 and checkpoint is None:
        logger.info("%s holds checkpoints %s: using the first, %r", path, seen, selected)
    return selected


def _tally(rows: Sequence[JsonlRow], selected: str | None) -> dict[int, Measured]:
    """Correct and total answers per question_index over the selected checkpoint's rows."""
    measured: dict[int, Measured] = {}
    for lineno, obj, _ in rows:
        if selected is not None and _checkpoint_of(obj) != selected:
            continue
        entry = measured.setdefault(
            obj["question_index"], Measured(0, 0, obj.get("question"), lineno)
        )
        entry.correct += int(obj["correct"])
        entry.total += 1
    return measured


def check_measured(
    measured: dict[int, Measured], questions: dict[int, Question], path: Path
) -> None:
    """Every measured question must be a question of this RL mix, with the same text."""
    for index, entry in measured.items():
        if index not in questions:
            raise UserError(
                f"{path}:{entry.lineno}: question_index {index} is not in the RL data; "
                "known_from must be measured on the same RL mix (rl_source, limits, max_rl_rows)"
            )
        if entry.question is not None and entry.question != questions[index]["question"]:
            raise UserError(
                f"{path}:{entry.lineno}: question_index {index} is {entry.question!r} there but "
                f"{questions[index]['question']!r} in the RL data; known_from must be measured "
                "on the same RL mix"
            )


def decide_known(
    questions: Sequence[Question],
    known_categories: Sequence[str],
    measured: dict[int, Measured] | None,
    threshold: float,
) -> tuple[list[bool], int]:
    """Per question: known? Measured accuracy >= threshold where known_from measured it, else
    its sub_category is in known_categories. Returns the flags and how many were measured.

    >>> qs = [{"index": 0, "sub_category": "simpleQA"}, {"index": 1, "sub_category": "general"}]
    >>> decide_known(qs, ["general"], {0: Measured(3, 4, None, 1)}, 0.5)
    ([True, True], 1)
    >>> decide_known(qs, ["general"], {0: Measured(1, 4, None, 1)}, 0.5)
    ([False, True], 1)
    """
    flags, n_measured = [], 0
    categories = set(known_categories)
    for question in questions:
        entry = (measured or {}).get(question["index"])
        if entry is not None:
            n_measured += 1
            flags.append(entry.accuracy >= threshold)
        else:
            flags.append(question["sub_category"] in categories)
    return flags, n_measured


def sample_indices(
    proactive: Sequence[bool], num: int, fraction: float | None, seed: int
) -> list[int]:
    """Which of the conversations to keep (positions into `proactive`, seeded).

    fraction None: a plain sample of `num` (all, in order, when there are no more than that;
    the same draw prep always made). Otherwise round(num * fraction) proactive ones and the rest
    plain ones, each as far as that pool allows, in a seeded mixed order.

    >>> flags = [True, False] * 10
    >>> sum(flags[i] for i in sample_indices(flags, 8, 0.75, 0))
    6
    """
    rng = random.Random(seed)
    if fraction is None:
        if len(proactive) <= num:
            return list(range(len(proactive)))
        return rng.sample(range(len(proactive)), num)
    want_proactive = round(num * fraction)
    wants = {True: want_proactive, False: num - want_proactive}
    chosen: list[int] = []
    for flag in (True, False):
        pool = [i for i, p in enumerate(proactive) if p == flag]
        if len(pool) < wants[flag]:
            logger.warning(
                "proactive_fraction=%s wants %d %s SFT conversations, only %d exist: using all",
                fraction,
                wants[flag],
                "proactive" if flag else "plain",
                len(pool),
            )
        chosen += rng.sample(pool, min(wants[flag], len(pool)))
    rng.shuffle(chosen)
    return chosen


def balanced_length(n_known: int, rows: int, fraction: float) -> int:
    """How long balance_known's order keeps `fraction` known: until one side runs out.

    >>> balanced_length(6, 100, 0.5), balanced_length(1, 1, 0.5)
    (12, 0)
    """
    return min(rows, int(n_known / fraction), int((rows - n_known) / (1 - fraction)))


def balance_known(known: Sequence[bool], fraction: float, seed: int) -> list[int]:
    """An order of the questions (positions into `known`) in which every prefix holds about
    `fraction` known ones, each kind in a seeded order; once a kind runs out, the rest of the
    other follows. grpo trains on a prefix (max_prompts), so its pool then mixes questions worth
    answering with questions worth hedging instead of mirroring the data's mostly-unknown mix.

    >>> order = balance_known([False] * 8 + [True] * 4, 0.5, 0)
    >>> [([False] * 8 + [True] * 4)[i] for i in order[:6]]
    [True, False, True, False, True, False]
    >>> sorted(order) == list(range(12))
    True
    """
    rng = random.Random(seed)
    kinds = {flag: [i for i, k in enumerate(known) if k == flag] for flag in (True, False)}
    for positions in kinds.values():
        rng.shuffle(positions)
    order: list[int] = []
    n_known = 0
    while kinds[True] or kinds[False]:
        # known next when the prefix is below its share (or only known ones are left)
        take_known = bool(kinds[True]) and (
            not kinds[False] or n_known < fraction * (len(order) + 1)
        )
        order.append(kinds[take_known].pop())
        n_known += take_known
    return order


def balance_within_kinds(
    known: Sequence[bool], kinds: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], dict[str, int]]:
    """balance_known within every kind (sub_category) on its own. Each kind that holds both
    known and unknown questions gives its balanced prefix (`fraction` known); these lead the
    order, interleaved in proportion to their lengths, so that every prefix holds about the same
    share of known questions in each kind. The rest follows in balance_known's order. A pool drawn
    from the lead cannot tell known from unknown by kind (the model must learn it per question);
    returns the order and how many of each kind lead it.

    >>> known = [True, False, False, False, True, True, False, True]
    >>> kinds = ["sum", "sum", "sum", "sum", "fact", "fact", "fact", "trivia"]
    >>> order, lead = balance_within_kinds(known, kinds, 0.5, 0)
    >>> lead
    {'fact': 2, 'sum': 2}
    >>> sorted(known[i] for i in order[:4]), sorted(order) == list(range(8))
    ([False, False, True, True], True)
    """
    by_kind: dict[str, list[int]] = {}
    for position, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(position)
    heads: dict[str, list[int]] = {}
    for kind in sorted(by_kind):
        positions = by_kind[kind]
        flags = [known[i] for i in positions]
        length = balanced_length(sum(flags), len(flags), fraction)
        if length > 0:
            heads[kind] = [positions[k] for k in balance_known(flags, fraction, seed)[:length]]
    lead: list[int] = []
    taken = dict.fromkeys(heads, 0)
    for _ in range(sum(len(head) for head in heads.values())):
        # the kind furthest behind its proportional share goes next
        kind = min(
            (k for k in heads if taken[k] < len(heads[k])),
            key=lambda k: ((taken[k] + 1) / len(heads[k]), k),
        )
        lead.append(heads[kind][taken[kind]])
        taken[kind] += 1
    in_lead = set(lead)
    rest = [i for i in range(len(known)) if i not in in_lead]
    tail = [rest[k] for k in balance_known([known[i] for i in rest], fraction, seed)]
    return lead + tail, {kind: len(head) for kind, head in heads.items()}
