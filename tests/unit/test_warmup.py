"""The warm-up builder (stages/prep/warmup.py): tag format, determinism, known/unknown decisions."""

from __future__ import annotations

import json
import random

import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.tags import parse_response
from proactive_rl.stages.prep.warmup import (
    KNOWN_ARITHMETIC_THINK,
    KNOWN_THINK,
    PROACTIVE_TEXT,
    UNKNOWN_ANSWERS,
    UNKNOWN_THINK,
    Measured,
    assistant_turn,
    balance_within_kinds,
    build_conversation,
    check_measured,
    decide_known,
    question_kind,
    read_known_from,
    sample_indices,
)

KIND_CASES = [
    ("What is 17 + 25?", "arithmetic"),
    ("What is 6 * 3?", "arithmetic"),
    ("What is 77 - 49?", "arithmetic"),
    ("Who received the IEEE Frank Rosenblatt Award in 2010?", "person"),
    ("To whom was the prize awarded?", "person"),
    ("In what year did the railway station in Orrindale close?", "year"),
    ("What year was the bridge built?", "year"),
    ("On what day, month, and year was she born?", "date"),
    ("When did the library open?", "date"),
    ("How many legs does a spider have?", "number"),
    ("How many years did the war last?", "number"),
    ("In which city was the treaty signed?", "place"),
    ("Where was the first mayor born?", "place"),
    ("What is the capital of France?", "fact"),
    ("What do bees make?", "fact"),
]


@pytest.mark.parametrize("question, kind", KIND_CASES)
def test_question_kind(question, kind):
    assert question_kind(question) == kind


# (question, answer) pairs of every kind, from the sample data and SimpleQA
QUESTIONS = [(question, str(1900 + i)) for i, (question, _) in enumerate(KIND_CASES)] + [
    ("What is 17 + 25?", "42"),
    ("Who received the IEEE Frank Rosenblatt Award in 2010?", "Michio Sugeno"),
    ("What is the largest animal on Earth?", "blue  whale\n"),
]


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_assistant_turn_is_well_formed(known, seed):
    for question, answer in QUESTIONS:
        text = assistant_turn(question, answer, known, random.Random(seed))
        parsed = parse_response(text)
        assert text.startswith("<think>\n") and "\n</think>\n\n" in text
        assert parsed.think
        assert parsed.proactive is (not known)  # proactive only for questions it does not know
        if known:
            assert parsed.formal == " ".join(answer.split())  # the plain correct answer
        else:
            assert parsed.formal == UNKNOWN_ANSWERS[question_kind(question)]
            assert parsed.formal.startswith("I don't know")
            assert parsed.proactive_text  # says something, not an empty block
            assert answer.strip() not in parsed.formal  # never slips the gold answer in
        assert text.count("<think>") == 1 and text.count("<proactive>") == (0 if known else 1)


def test_arithmetic_think_shows_the_sum():
    text = assistant_turn("What is 17 + 25?", "42", True, random.Random(0))
    assert "17 + 25 = 42" in text


def test_think_reflects_the_question_type():
    year = assistant_turn("In what year did the station close?", "1916", False, random.Random(1))
    person = assistant_turn("Who was the first mayor?", "Edda Brandt", False, random.Random(1))
    assert "a specific year" in year and "a specific person" in person


def test_templates_vary_across_questions():
    thinks, proactives = set(), set()
    for i in range(60):
        row = build_conversation(
            {"question": "Who was it?", "answer": "X", "sub_category": "s", "index": i},
            known=False,
            seed=42,
            system_prompt="sys",
        )
        parsed = parse_response(row["messages"][-1]["content"])
        thinks.add(row["messages"][-1]["content"].split("</think>")[0])
        proactives.add(parsed.proactive_text)
    assert len(thinks) == len(UNKNOWN_THINK)
    assert len(proactives) > 3
    assert len(KNOWN_THINK) > 1 and len(KNOWN_ARITHMETIC_THINK) > 1 and len(PROACTIVE_TEXT) > 1


def test_build_conversation_is_users_format_and_deterministic():
    question = {"question": "Who?", "answer": "Ann", "sub_category": "simpleQA", "index": 7}
    row = build_conversation(question, known=False, seed=42, system_prompt="You are helpful.")
    assert set(row) == {"messages", "id", "sub_category"}
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == "You are helpful."
    assert row["messages"][1]["content"] == "Who?"
    assert row["id"] == 7 and row["sub_category"] == "simpleQA"
    again = build_conversation(
        dict(question), known=False, seed=42, system_prompt="You are helpful."
    )
    assert json.dumps(row) == json.dumps(again)
    seeds = {
        build_conversation(question, known=False, seed=s, system_prompt="x")["messages"][-1][
            "content"
        ]
        for s in range(20)
    }
    assert len(seeds) > 1  # the seed picks the phrasing


def _q(index, sub_category, question="Q?"):
    return {"index": index, "sub_category": sub_category, "question": question, "answer": "A"}


@pytest.mark.parametrize(
    "correct, total, threshold, known",
    [
        (2, 4, 0.5, True),  # exactly at the threshold counts as known
        (1, 4, 0.5, False),
        (4, 4, 1.0, True),
        (3, 4, 1.0, False),
        (0, 4, 0.0, True),
        (1, 3, 0.3, True),
    ],
)
def test_measured_accuracy_threshold(correct, total, threshold, known):
    flags, n = decide_known(
        [_q(0, "simpleQA")], [], {0: Measured(correct, total, None, 1)}, threshold
    )
    assert flags == [known] and n == 1


def test_category_rule_and_measured_override():
    questions = [_q(0, "arithmetic"), _q(1, "general"), _q(2, "simpleQA"), _q(3, "obscure")]
    flags, n = decide_known(questions, ["arithmetic", "general"], None, 0.5)
    assert flags == [True, True, False, False] and n == 0
    measured = {0: Measured(0, 4, None, 1), 2: Measured(4, 4, None, 2)}
    flags, n = decide_known(questions, ["arithmetic", "general"], measured, 0.5)
    assert flags == [False, True, True, False] and n == 2


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_read_known_from_averages_per_question(tmp_path):
    path = _write(
        tmp_path / "samples.jsonl",
        [
            {"question_index": 3, "correct": True, "question": "Q3?"},
            {"question_index": 3, "correct": False, "question": "Q3?"},
            {"question_index": 5, "correct": False},
            {"question_index": 3, "correct": True, "question": "Q3?"},
        ],
    )
    measured, checkpoint = read_known_from(path, None)
    assert checkpoint is None
    assert measured[3].accuracy == pytest.approx(2 / 3) and measured[3].question == "Q3?"
    assert measured[5].accuracy == 0.0 and measured[5].lineno == 3


def test_read_known_from_selects_a_checkpoint(tmp_path):
    rows = [
        {"checkpoint": "base", "question_index": 0, "correct": False},
        {"checkpoint": "sft", "question_index": 0, "correct": True},
        {"checkpoint": "base", "question_index": 1, "correct": True},
    ]
    path = _write(tmp_path / "samples.jsonl", rows)
    measured, checkpoint = read_known_from(path, None)  # the first in the file
    assert checkpoint == "base" and measured[0].accuracy == 0.0 and measured[1].accuracy == 1.0
    measured, checkpoint = read_known_from(path, "sft")
    assert checkpoint == "sft" and set(measured) == {0} and measured[0].accuracy == 1.0
    with pytest.raises(UserError, match="no rows of checkpoint 'rl'; checkpoints: base, sft"):
        read_known_from(path, "rl")


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ('{"question_index": 0, "correct": tru', ":2: not valid JSON"),
        ({"question_index": "0", "correct": True}, ":2: needs an integer 'question_index'"),
        ({"question_index": -1, "correct": True}, ":2: needs an integer 'question_index'"),
        ({"question_index": 0}, ":2: needs a boolean 'correct'"),
        ({"question_index": 0, "correct": "yes"}, ":2: needs a boolean 'correct'"),
        ([1, 2], ":2: expected a JSON object"),
    ],
)
def test_read_known_from_names_file_and_line(tmp_path, bad_row, message):
    path = _write(tmp_path / "s.jsonl", [{"question_index": 0, "correct": True}, bad_row])
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as err:
        read_known_from(path, None)
    assert str(path) in str(err.value)


def test_check_measured_rejects_other_rl_data(tmp_path):
    questions = {0: _q(0, "x", "What is 1 + 1?")}
    path = tmp_path / "s.jsonl"
    check_measured({0: Measured(1, 1, "What is 1 + 1?", 1)}, questions, path)
    with pytest.raises(UserError, match=r"s.jsonl:4: question_index 9 is not in the RL data"):
        check_measured({9: Measured(1, 1, None, 4)}, questions, path)
    with pytest.raises(UserError, match=r"s.jsonl:2: question_index 0 is 'Other\?' there"):
        check_measured({0: Measured(1, 1, "Other?", 2)}, questions, path)


def test_sample_indices_without_fraction_is_the_old_draw():
    rows = [f"row{i}" for i in range(80)]
    flags = [i % 2 == 0 for i in range(80)]
    picked = sample_indices(flags, 10, None, 42)
    assert [rows[i] for i in picked] == random.Random(42).sample(rows, 10)  # unchanged behaviour
    assert sample_indices(flags[:5], 10, None, 42) == [0, 1, 2, 3, 4]  # all, in order


@pytest.mark.parametrize("fraction, num, expected", [(0.5, 10, 5), (0.2, 10, 2), (1.0, 6, 6)])
def test_sample_indices_balances_seeded(fraction, num, expected):
    flags = [i % 4 == 0 for i in range(100)]  # 25 proactive, 75 plain
    picked = sample_indices(flags, num, fraction, 3)
    assert len(picked) == num == len(set(picked))
    assert sum(flags[i] for i in picked) == expected
    assert picked == sample_indices(flags, num, fraction, 3)
    assert picked != sample_indices(flags, num, fraction, 4)


def test_sample_indices_short_pool_uses_all_of_it():
    flags = [True] * 3 + [False] * 50
    picked = sample_indices(flags, 20, 0.5, 0)
    assert sum(flags[i] for i in picked) == 3 and len(picked) == 13


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_balance_within_kinds_keeps_every_kind_at_the_fraction(seed, fraction):
    """In every prefix of the lead, each kind's known share stays within one question of the
    fraction; kinds that are all known or all unknown are left to the tail; nothing is lost."""
    rng = random.Random(seed)
    kinds = [rng.choice("abcd") for _ in range(200)]
    share = {"a": 0.5, "b": 0.2, "c": 0.0, "d": 1.0}  # c never known, d always
    known = [rng.random() < share[k] for k in kinds]
    order, lead = balance_within_kinds(known, kinds, fraction, seed)
    assert sorted(order) == list(range(200))
    assert set(lead) == {"a", "b"} and sum(lead.values()) > 0
    head = order[: sum(lead.values())]
    for kind, count in lead.items():
        of_kind = [i for i in head if kinds[i] == kind]
        assert len(of_kind) == count
        for end in range(1, count + 1):
            assert abs(sum(known[i] for i in of_kind[:end]) - fraction * end) <= 1
    # interleaved in proportion: the first half of the lead holds about half of each kind
    half = head[: len(head) // 2]
    for kind, count in lead.items():
        assert abs(sum(kinds[i] == kind for i in half) - count / 2) <= 1
