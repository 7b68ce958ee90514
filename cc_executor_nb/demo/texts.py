"""Deterministic reply texts for the demo scenarios.

Every function here is pure: the same arguments give the same text, so tests
and recordings can compare replies exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "AFTER_TOOL_THINKING",
    "GREETING",
    "MARKDOWN_XSS",
    "THINKING_TEXT",
    "THINK_ANSWER",
    "TOOL_THINKING",
    "haikus",
    "huge_text",
    "story_chunks",
]

GREETING = "Hello! This is the cc_executor_nb demo backend."

THINKING_TEXT = "The user asked me to take my time. Considering the question carefully."
THINK_ANSWER = "Done thinking. The answer is 42."
TOOL_THINKING = "To answer this I should run a command first and read what it prints."
AFTER_TOOL_THINKING = "The command printed hi, which is all I needed to know."

# Markdown with two classic HTML-injection payloads: a renderer must show them
# as text, never run them.
MARKDOWN_XSS = (
    "# Demo report\n"
    "\n"
    "Some **bold** text, some *italic* text and `inline code`.\n"
    "\n"
    "- first item\n"
    "- second item with a [link](https://example.com)\n"
    "\n"
    "An image tag: <img src=x onerror=alert(1)>\n"
    "\n"
    "A script tag: <script>alert(2)</script>\n"
    "\n"
    "```python\n"
    "print('done')\n"
    "```\n"
)

_HAIKUS = (
    "Morning kernel wakes\nstreams of tokens softly flow\nthe cell runs again",
    "A long job hums on\nheartbeats tick behind the glass\nno output is lost",
    "Pipes fill up with light\nmegabytes in a single line\nread in patient chunks",
    "Silence before speech\nthe model thinks, the clock waits\nthen the answer comes",
    "Errors come and go\nretry, back off, try once more\nthe result holds true",
)

_STORY_SENTENCES = (
    "The old notebook kernel woke before dawn and listened for work.",
    "A patient engineer typed one long prompt and pressed run.",
    "Tokens began to drift across the glowing cell like falling snow.",
    "Every few seconds a heartbeat said that the job was still alive.",
    "Nobody had to guess whether anything was happening behind the glass.",
    "When the answer finally arrived it was whole, and nothing was lost.",
)
_SENTENCES_PER_PARAGRAPH = 3


def haikus(count: int) -> str:
    """Return ``count`` numbered haikus separated by blank lines."""
    poems = (f"Haiku {index + 1}:\n{_HAIKUS[index % len(_HAIKUS)]}" for index in range(count))
    return "\n\n".join(poems)


def story_chunks(words: int, chunk_words: int = 8) -> Iterator[str]:
    """Yield a story of exactly ``words`` words in pieces of ``chunk_words``.

    Joined, the pieces satisfy ``len("".join(pieces).split()) == words``.
    """
    pieces: list[str] = []
    for index, word in enumerate(_story_words(words)):
        pieces.append(word)
        if len(pieces) == chunk_words or index == words - 1:
            yield "".join(pieces)
            pieces = []


def _story_words(count: int) -> Iterator[str]:
    """The story's words, each with the whitespace that follows it."""
    produced = 0
    sentence_number = 0
    while produced < count:
        sentence = _STORY_SENTENCES[sentence_number % len(_STORY_SENTENCES)].split()
        sentence = sentence[: count - produced]
        sentence_number += 1
        produced += len(sentence)
        yield from _spaced(sentence, sentence_number, last=produced == count)


def _spaced(sentence: list[str], number: int, *, last: bool) -> Iterator[str]:
    if not sentence[-1].endswith("."):
        # A story cut short mid-sentence still ends with a full stop.
        sentence[-1] += "."
    # A blank line between paragraphs gives the reply realistic Markdown shape.
    ending = "" if last else ("\n\n" if number % _SENTENCES_PER_PARAGRAPH == 0 else " ")
    for position, word in enumerate(sentence):
        yield word + (ending if position == len(sentence) - 1 else " ")


def huge_text(size: int) -> str:
    """Return exactly ``size`` ASCII characters with no newline.

    The text is a run of 10-byte records ``"%09d|" % offset``, so a reader can
    tell where a truncated or corrupted copy went wrong.
    """
    records = "".join(f"{offset:09d}|" for offset in range(0, size + 10, 10))
    return records[:size]
