"""Reading the users' input files: SFT JSONL, RL JSONL, SimpleQA CSV, and the RL mix.

Every problem a user can fix names the file and the line (JSONL) or data row (CSV).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, NotRequired, TypedDict

from proactive_rl.shared.errors import UserError

SIMPLEQA_CATEGORY = "simpleQA"
GZIP_MAGIC = b"\x1f\x8b"


def read_text(path: Path) -> str:
    """A whole input file as text: UTF-8 with or without a byte-order mark (what many Windows
    editors write), LF or CRLF line ends; a .gz is decompressed. Anything else is one error
    naming the file, the line and the byte offset."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the path of a file")
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        if not path.name.lower().endswith(".gz"):
            raise UserError(f"{path} is gzip-compressed: decompress it, or name it {path.name}.gz")
        try:
            data = gzip.decompress(data)
        except (gzip.BadGzipFile, EOFError, OSError) as err:
            raise UserError(f"{path}: a damaged gzip file ({err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {data[err.start : err.start + 1]!r} at offset "
            f"{err.start}); save the file as UTF-8"
        ) from None
    return text.replace("\r\n", "\n")


class JsonlRow(NamedTuple):
    """One non-blank line of a JSONL input: where it is, what it holds, and its raw text."""

    lineno: int
    obj: dict[str, Any]
    line: str


class Question(TypedDict):
    """One RL question as read from an input file; `index` is set once the mix is known."""

    question: str
    answer: str
    original_id: str
    sub_category: str
    index: NotRequired[int]


class SourceSummary(TypedDict):
    """One RL source in the marker: its path, question count and sub_category counts."""

    path: str
    questions: int
    sub_categories: dict[str, int]


def read_jsonl(path: Path) -> list[JsonlRow]:
    """(line number, object, raw line) for every non-blank line; bad JSON names file and line."""
    rows = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object")
        rows.append(JsonlRow(lineno, obj, line))
    return rows


def check_sft_row(path: Path, lineno: int, obj: dict[str, Any]) -> None:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{path}:{lineno}: missing a non-empty 'messages' list")
    for msg in messages:
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("content"), str)
            or msg.get("role") not in ("system", "user", "assistant")
        ):
            raise UserError(f"{path}:{lineno}: each message needs a role and a string content")
    if messages[-1]["role"] != "assistant":
        raise UserError(f"{path}:{lineno}: the last message must be the assistant's answer")


def is_csv(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def read_rl_questions(path: Path) -> list[Question]:
    """Questions as {question, answer, original_id, sub_category} from JSONL or SimpleQA CSV."""
    if is_csv(path):
        return read_simpleqa_csv(path)
    return [_jsonl_question(path, row.lineno, row.obj) for row in read_jsonl(path)]


def _jsonl_question(path: Path, lineno: int, obj: dict[str, Any]) -> Question:
    """One line of the users' RL JSONL: the first user turn asks, the last assistant turn is the
    ground truth."""
    question, truth = _question_turns(path, lineno, obj)
    if not isinstance(question, str) or not question.strip():
        raise UserError(
            f"{path}:{lineno}: the user turn (the question) must be non-empty text, "
            f"got {question!r}"
        )
    return {
        "question": question,
        "answer": _ground_truth(path, lineno, truth),
        "original_id": str(obj.get("id", lineno - 1)),
        "sub_category": str(obj.get("sub_category", "")),
    }


def _question_turns(path: Path, lineno: int, obj: dict[str, Any]) -> tuple[Any, Any]:
    """The contents of the first user turn and the last assistant turn (not yet checked)."""
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise UserError(f"{path}:{lineno}: missing a 'messages' list")
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    assistant = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if not user or not assistant:
        raise UserError(
            f"{path}:{lineno}: needs a user turn (the question) and an assistant turn "
            "(the ground truth)"
        )
    return user[0].get("content"), assistant[-1].get("content")


def _ground_truth(path: Path, lineno: int, truth: Any) -> str:
    # a number is a fine ground truth ("42"); null or a list is not ("None" would be graded)
    if isinstance(truth, bool) or not isinstance(truth, str | int | float):
        raise UserError(
            f"{path}:{lineno}: the assistant turn (the ground truth) must be text or a "
            f"number, got {truth!r}"
        )
    answer = str(truth).strip()
    if not answer:
        raise UserError(f"{path}:{lineno}: the assistant turn (ground truth) is empty")
    return answer


def read_simpleqa_csv(path: Path) -> list[Question]:
    """SimpleQA rows (this repo's copy names the columns question/true_answer, OpenAI's original
    problem/answer); a .csv.gz is read compressed. Every row's sub_category is 'simpleQA'."""
    text = read_text(path)
    try:
        return _simpleqa_rows(path, csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from err


def _simpleqa_rows(path: Path, reader: csv.DictReader) -> list[Question]:
    q_col, a_col = _simpleqa_columns(path, reader.fieldnames or [])
    return [_simpleqa_question(path, index, row, q_col, a_col) for index, row in enumerate(reader)]


def _simpleqa_columns(path: Path, fields: Sequence[str]) -> tuple[str, str]:
    """The question and answer columns, in either spelling."""
    q_col = next((c for c in ("question", "problem") if c in fields), None)
    a_col = next((c for c in ("true_answer", "answer") if c in fields), None)
    if q_col is None or a_col is None:
        raise UserError(
            f"{path}: expected SimpleQA columns question/true_answer (or problem/answer), "
            f"found {fields}"
        )
    return q_col, a_col


def _simpleqa_question(
    path: Path, index: int, row: dict[str, str], q_col: str, a_col: str
) -> Question:
    answer = (row.get(a_col) or "").strip()
    # header is line 1; csv rows can span lines, so name the row, not the line
    if not answer:
        raise UserError(f"{path}: data row {index + 1} has an empty {a_col}")
    if not (row.get(q_col) or "").strip():
        raise UserError(f"{path}: data row {index + 1} has an empty {q_col}")
    return {
        "question": row[q_col],
        "answer": answer,
        "original_id": str(index),
        "sub_category": SIMPLEQA_CATEGORY,
    }


def read_rl_mix(
    sources: list[Path],
    limits: list[int | None] | None,
    shuffle: bool,
    seed: int,
    max_rows: int | None,
) -> tuple[list[Question], list[SourceSummary]]:
    """The RL questions of every source, concatenated in order, and a summary per source.

    Each question gets `index`, its position in the concatenation after the per-source caps
    (before the shuffle), so a question keeps its index when only the shuffle changes; without
    the shuffle the indices are 0..n-1 in output order, as they always were. `max_rows` then
    keeps the head of the (possibly shuffled) mix.
    """
    questions: list[Question] = []
    summary: list[SourceSummary] = []
    for position, path in enumerate(sources):
        rows = read_capped(path, limits[position] if limits is not None else None)
        summary.append(
            {
                "path": str(path),
                "questions": len(rows),
                "sub_categories": dict(Counter(q["sub_category"] for q in rows)),
            }
        )
        questions.extend(rows)
    for index, question in enumerate(questions):
        question["index"] = index
    if shuffle:
        random.Random(seed).shuffle(questions)
    if max_rows is not None:
        questions = questions[:max_rows]
    return questions, summary


def read_capped(path: Path, limit: int | None) -> list[Question]:
    """The first `limit` questions of one source (all with None); an empty one is refused."""
    rows = read_rl_questions(path)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        # refused before anything is written: data/processed keeps its earlier contents
        empty = "no data row under the header" if is_csv(path) else "no non-blank line"
        raise UserError(f"{path} holds no RL questions ({empty}); give at least one")
    return rows
