"""Input files as users have them: UTF-8 with a byte-order mark, CRLF line ends and gzip are
read; what cannot be read is one error naming the file, the line and the byte."""

from __future__ import annotations

import gzip
import json

import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.stages.prep.sources import read_jsonl, read_rl_questions, read_simpleqa_csv

ROWS = [{"id": 1, "q": "Café?"}, {"id": 2, "q": "Zürich?"}]
JSONL = "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n"
LATIN1 = JSONL.encode("latin-1")
# a UTF-8 first line, then a Windows-1252 one
MIXED = (json.dumps(ROWS[0]) + "\n").encode() + json.dumps(ROWS[1], ensure_ascii=False).encode(
    "cp1252"
)
GZIPPED = gzip.compress(JSONL.encode())
CSV = "question,true_answer\nWhat is the capital of France?,Paris\nWho wrote Hamlet?,Shakespeare\n"


@pytest.mark.parametrize(
    "name, content",
    [
        ("plain.jsonl", JSONL.encode()),
        ("bom.jsonl", b"\xef\xbb\xbf" + JSONL.encode()),
        ("crlf.jsonl", JSONL.replace("\n", "\r\n").encode()),
        ("packed.jsonl.gz", gzip.compress(JSONL.encode())),
    ],
)
def test_jsonl_as_editors_write_it_is_read(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert [obj for _, obj, _ in read_jsonl(path)] == ROWS
    assert [line for line, _, _ in read_jsonl(path)] == [1, 2]


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("latin1.jsonl", LATIN1, "latin1.jsonl:1: not UTF-8 text (byte b'\\xe9' at"),
        ("second.jsonl", MIXED, "second.jsonl:2: not UTF-8 text"),
        ("zipped.jsonl", GZIPPED, "is gzip-compressed: decompress it, or name it"),
        ("broken.jsonl.gz", GZIPPED[:20], "a damaged gzip file"),
        ("bad.jsonl", b'{"id": 1}\n{"id": \n', "bad.jsonl:2: not valid JSON"),
    ],
)  # fmt: skip
def test_unreadable_jsonl_names_file_line_and_byte(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_jsonl(path)
    assert fragment in str(err.value)


def test_a_folder_is_not_reported_missing(tmp_path):
    (tmp_path / "data.jsonl").mkdir()
    with pytest.raises(UserError, match="is a folder; give the path of a file"):
        read_jsonl(tmp_path / "data.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    "content",
    [CSV.encode(), b"\xef\xbb\xbf" + CSV.encode(), CSV.replace("\n", "\r\n").encode()],
)
def test_simpleqa_csv_with_bom_or_crlf_is_read(tmp_path, content):
    path = tmp_path / "simple_qa.csv"
    path.write_bytes(content)
    rows = read_simpleqa_csv(path)
    assert len(rows) == 2
    assert "capital of France" in json.dumps(rows[0]) and "Paris" in json.dumps(rows[0])


def test_simpleqa_csv_in_latin1_names_the_line(tmp_path):
    path = tmp_path / "simple_qa.csv"
    path.write_bytes((CSV + "Où est Genève?,Suisse\n").encode("latin-1"))
    with pytest.raises(UserError, match=r"simple_qa.csv:4: not UTF-8 text"):
        read_simpleqa_csv(path)


def rl_line(question, truth) -> str:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": truth}]
    return json.dumps({"id": 1, "messages": messages})


@pytest.mark.parametrize(
    "question, truth, fragment",
    [
        ("Who?", None, "the ground truth) must be text or a number, got None"),
        ("Who?", ["a", "b"], "must be text or a number, got ['a', 'b']"),
        ("Who?", True, "must be text or a number, got True"),
        (42, "x", "the user turn (the question) must be non-empty text, got 42"),
        ("  ", "x", "must be non-empty text"),
    ],
)
def test_rl_rows_with_a_null_truth_or_a_non_text_question_are_refused(
    tmp_path, question, truth, fragment
):
    path = tmp_path / "rl.jsonl"
    path.write_text(rl_line("Fine?", "yes") + "\n" + rl_line(question, truth) + "\n")
    with pytest.raises(UserError) as err:
        read_rl_questions(path)
    assert f"{path}:2: " in str(err.value) and fragment in str(err.value)


def test_a_number_is_a_ground_truth(tmp_path):
    path = tmp_path / "rl.jsonl"
    path.write_text(rl_line("What is 6 * 7?", 42) + "\n")
    assert read_rl_questions(path)[0]["answer"] == "42"
