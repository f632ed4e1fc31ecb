"""The SFT input: prep's published sft_train.jsonl, read into TRL prompt/completion rows. Light
(no torch), so `proactive sft` refuses a bad file in a second, before a model is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import DataPaths
from proactive_rl.shared.publish import is_stable, verified_processed


class Turn(TypedDict):
    role: str
    content: str


class Conversation(TypedDict):
    """One TRL prompt/completion row: the turns before the answer, then the answer."""

    prompt: list[Turn]
    completion: list[Turn]


def read_published_conversations(data: DataPaths, max_samples: int | None) -> list[Conversation]:
    """prep's sft_train.jsonl, checked to be published and unchanged since, cut to the first
    `max_samples` conversations (None: all)."""
    data_file = data.sft_train
    if not is_stable(data.processed) or not data_file.is_file():
        raise UserError(
            f"{data_file} is missing or not published (no {data.processed}/"
            "STABLE.json). Run `proactive prep` first (in compose: `docker compose run --rm prep`)."
        )
    verified_processed(data)  # its files are still the ones prep published
    conversations = read_conversations(data_file)
    if max_samples is not None:
        conversations = conversations[:max_samples]
    return conversations


def read_conversations(path: Path) -> list[Conversation]:
    """The users' SFT lines as TRL prompt/completion rows: prompt = every message before the
    last one, completion = the last (assistant) message. Errors name file and line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                rows.append(parse_conversation(line, f"{path}:{lineno}"))
    if not rows:
        raise UserError(f"{path} holds no conversations; check the SFT source given to prep")
    return rows


def parse_conversation(line: str, where: str) -> Conversation:
    """One line: an object whose 'messages' end with the assistant's answer."""
    try:
        obj = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg}, col {err.colno})") from None
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise UserError(
            f"{where}: expected an object with a 'messages' list of at least two turns "
            "(system/user prompt, then the assistant answer)"
        )
    if not all(is_turn(turn) for turn in messages):
        raise UserError(f"{where}: every message needs a string 'role' and 'content'")
    if messages[-1]["role"] != "assistant":
        raise UserError(f"{where}: the last message must be the assistant's answer")
    # Only role/content: extra keys would vary between lines and break the arrow schema.
    turns: list[Turn] = [{"role": t["role"], "content": t["content"]} for t in messages]
    return {"prompt": turns[:-1], "completion": turns[-1:]}


def is_turn(turn: Any) -> bool:
    return (
        isinstance(turn, dict)
        and isinstance(turn.get("role"), str)
        and isinstance(turn.get("content"), str)
    )
