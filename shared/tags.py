"""Parse the `<think>` / `<proactive>` tags the model is trained to emit.

A response looks like::

    <think>reasoning</think>
    <proactive>what I am unsure about</proactive>
    The plain, formal answer.

Only the formal answer is graded against the ground truth, so everything here is about
separating it from the tagged blocks. Tags match exactly `<think>`, `</think>`, `<proactive>`,
`</proactive>`, in any letter case; tags with attributes or inner spaces are not tags.

Malformed output (decided here once, so every reward treats it the same way):

- A complete block is an opening tag and the *nearest* closing tag after it (non-greedy), so
  `<think>a<think>b</think>c</think>d` removes `<think>a<think>b</think>` and leaves `c d`
  (the same as the recipe's regex; real nesting does not occur in practice).
- An opening tag with no closing tag after it starts a block that runs to the end of the text:
  the model never reached its answer, so nothing after it is formal answer.
- A closing tag with no opening tag before it is dropped and the text around it is kept. If a chat
  template pre-fills `<think>` into the prompt, prepend it to the response before parsing, or the
  thinking will be graded as answer.
- `has_think` / `has_proactive` are true only for a complete block, even an empty one
  (`<proactive></proactive>` counts; that weakness is the recipe's and is kept on purpose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FLAGS = re.IGNORECASE | re.DOTALL
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", _FLAGS)
_PROACTIVE_BLOCK = re.compile(r"<proactive>(.*?)</proactive>", _FLAGS)
# Run after complete blocks are gone, so any opening tag left is unclosed.
_UNCLOSED_TO_END = re.compile(r"<(?:think|proactive)>.*", _FLAGS)
_STRAY_CLOSING = re.compile(r"</(?:think|proactive)>", re.IGNORECASE)
_TAG = re.compile(r"</?(?:think|proactive)>", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def formal_answer(text: str) -> str:
    """The response without its think/proactive blocks, whitespace collapsed and stripped.

    Blocks are replaced by a space, not deleted, so words on either side of a block cannot fuse
    into a new word that happens to contain the ground truth.

    >>> formal_answer("<think>hmm</think>\\n<PROACTIVE>not sure</Proactive>\\n\\n Paris ")
    'Paris'
    >>> formal_answer("Yes<think>x</think>no")
    'Yes no'
    >>> formal_answer("Lyon <think>still thinking, never closed... Paris")
    'Lyon'
    >>> formal_answer("thoughts</think> Paris")
    'thoughts Paris'
    """
    text = _THINK_BLOCK.sub(" ", text)
    text = _PROACTIVE_BLOCK.sub(" ", text)
    text = _UNCLOSED_TO_END.sub(" ", text)
    text = _STRAY_CLOSING.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def has_think(text: str) -> bool:
    """Whether the response contains a complete `<think>…</think>` block.

    >>> has_think("<think>a</think> b"), has_think("<think>a b"), has_think("</think><think>")
    (True, False, False)
    """
    return _THINK_BLOCK.search(text) is not None


def has_proactive(text: str) -> bool:
    """Whether the response contains a complete `<proactive>…</proactive>` block (empty counts).

    >>> has_proactive("<proactive></proactive> b"), has_proactive("<proactive>unsure")
    (True, False)
    """
    return _PROACTIVE_BLOCK.search(text) is not None


def proactive_text(text: str) -> str:
    """Contents of all complete proactive blocks, each stripped, non-empty ones joined by newlines.

    Blocks are found in the raw text, like `has_proactive` (and the recipe), so a block written
    inside the reasoning counts too; the two functions never disagree.

    >>> proactive_text("<proactive> Unsure. </proactive> x <proactive>Check a source.</proactive>")
    'Unsure.\\nCheck a source.'
    >>> proactive_text("<proactive>  </proactive> answer")
    ''
    """
    parts = (m.group(1).strip() for m in _PROACTIVE_BLOCK.finditer(text))
    return "\n".join(p for p in parts if p)


@dataclass(frozen=True)
class ParsedResponse:
    """Everything the rewards and the eval read from one response."""

    think: bool
    proactive: bool
    proactive_text: str
    formal: str


def parse_response(text: str) -> ParsedResponse:
    """Parse one response into its tag flags, proactive text and formal answer.

    >>> parse_response("<think>t</think><proactive>Not sure.</proactive> Maybe 1912.")
    ParsedResponse(think=True, proactive=True, proactive_text='Not sure.', formal='Maybe 1912.')
    """
    return ParsedResponse(
        think=has_think(text),
        proactive=has_proactive(text),
        proactive_text=proactive_text(text),
        formal=formal_answer(text),
    )


def tag_format(response: str) -> tuple[bool, bool]:
    """(format_ok, malformed) of one raw response.

    malformed: an unclosed or stray `<think>` / `<proactive>` tag (left once complete blocks
    are removed, with parse_response's nearest-closing-tag rule). format_ok: a complete think
    block, nothing malformed, and a non-empty plain answer after the last tag. Eval reports
    both; `proactive_strict` with `well_formed=True` pays a hedge only in a format_ok response.

    >>> tag_format("<think>t</think><proactive>p</proactive> Paris")
    (True, False)
    >>> tag_format("<think>t</think>"), tag_format("Paris"), tag_format("<think>t ... Paris")
    ((False, False), (False, False), (False, True))
    >>> tag_format("<think>a<think>b</think>c</think> Paris")
    (False, True)
    """
    rest = _PROACTIVE_BLOCK.sub(" ", _THINK_BLOCK.sub(" ", response))
    malformed = _TAG.search(rest) is not None
    tags = list(_TAG.finditer(response))
    tail = response[tags[-1].end() :] if tags else response
    return has_think(response) and not malformed and bool(tail.strip()), malformed
