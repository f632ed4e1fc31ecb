"""Tag parsing: well-formed responses and every malformed shape we decided on in shared/tags.py."""

from __future__ import annotations

import pytest

from proactive_rl.shared.tags import (
    ParsedResponse,
    formal_answer,
    has_proactive,
    has_think,
    parse_response,
    proactive_text,
)

FORMAL_CASES = [
    # (response, expected formal answer)
    ("Paris", "Paris"),
    ("  Paris \n", "Paris"),
    ("<think>a</think>\n\n<proactive>b</proactive>\n\nPlain  answer.\n", "Plain answer."),
    ("<think>\nmulti\nline\n</think>Paris", "Paris"),
    # Case-insensitive, and mixed case between opening and closing tag.
    ("<THINK>x</think><Proactive>y</PROACTIVE> Paris", "Paris"),
    # Non-greedy: text between two blocks survives.
    ("<think>a</think> Paris <think>b</think> France", "Paris France"),
    # Blocks become a space, so neighbouring words are not glued into a new word.
    ("Yes<think>x</think>no", "Yes no"),
    # Unclosed opening tag: everything after it is unfinished thinking, removed.
    ("<think>I never stop thinking... Paris", ""),
    ("Lyon <think>hmm Paris", "Lyon"),
    ("<think>a</think> Lyon <proactive>unsure, maybe Paris", "Lyon"),
    # Stray closing tags are dropped; the text around them is kept (e.g. a template that
    # pre-filled <think> in the prompt: callers must prepend it, see tags.py).
    ("reasoning</think> Paris", "reasoning Paris"),
    ("Paris</proactive>", "Paris"),
    # Nested same-name blocks: the first close ends the block (like the recipe's regex), so the
    # text between the two closing tags leaks into the answer.
    ("<think>a<think>b</think>c</think>d", "c d"),
    # A proactive block inside a think block goes with the think block.
    ("<think>a<proactive>b</proactive>c</think> Paris", "Paris"),
    ("<proactive>x<think>y</think>z</proactive> Paris", "Paris"),
    # Empty blocks.
    ("<think></think><proactive></proactive>Paris", "Paris"),
    ("", ""),
    # Not tags: attributes or inner spaces.
    ("<think reason='x'>Paris", "<think reason='x'>Paris"),
]


@pytest.mark.parametrize(("text", "expected"), FORMAL_CASES)
def test_formal_answer(text: str, expected: str) -> None:
    assert formal_answer(text) == expected


FLAG_CASES = [
    # (response, has_think, has_proactive)
    ("<think>a</think><proactive>b</proactive> c", True, True),
    ("<think>a</think> c", True, False),
    ("<proactive>b</proactive> c", False, True),
    ("plain", False, False),
    ("<THINK>a</Think><PROACTIVE>b</proactive>", True, True),
    ("<think>\n\na\n\n</think>", True, False),
    # Unclosed or stray tags are not complete blocks.
    ("<think>never closed", False, False),
    ("<proactive>never closed", False, False),
    ("stray</think> and </proactive>", False, False),
    ("</think> reversed <think>", False, False),
    # An empty block is still a complete block (the recipe's weakness, kept).
    ("<think></think><proactive></proactive>", True, True),
    ("<proactive>   </proactive> answer", False, True),
]


@pytest.mark.parametrize(("text", "think", "proactive"), FLAG_CASES)
def test_block_flags(text: str, think: bool, proactive: bool) -> None:
    assert has_think(text) is think
    assert has_proactive(text) is proactive


PROACTIVE_TEXT_CASES = [
    ("<proactive> I am not sure. </proactive> Paris", "I am not sure."),
    ("<proactive>one</proactive> x <PROACTIVE>two</PROACTIVE>", "one\ntwo"),
    ("<proactive></proactive> answer", ""),
    ("<proactive>  \n </proactive><proactive>kept</proactive>", "kept"),
    ("<proactive>unclosed", ""),
    ("no tags", ""),
]


@pytest.mark.parametrize(("text", "expected"), PROACTIVE_TEXT_CASES)
def test_proactive_text(text: str, expected: str) -> None:
    assert proactive_text(text) == expected


def test_parse_response_combines_everything() -> None:
    text = "<think>Legal case.</think>\n<proactive>No access to records.</proactive>\nNot sure."
    assert parse_response(text) == ParsedResponse(
        think=True, proactive=True, proactive_text="No access to records.", formal="Not sure."
    )


def test_parsed_response_is_frozen() -> None:
    parsed = parse_response("x")
    with pytest.raises(AttributeError):
        parsed.formal = "y"  # type: ignore[misc]
