"""The writing skills' functions (examples/skills/writing/): reading an outline out of a model's
answer, the prompts, joining chapters in order; and every example input accepted by its schema."""

from __future__ import annotations

import json

import pytest

from common.skills import load_manifest, validate_input
from tests.skill_modules import SKILLS, example_input, load_skill_module

outline = load_skill_module("writing/outline", "outline")
chapter = load_skill_module("writing/write_chapter", "chapter")
polish = load_skill_module("writing/polish", "polish")

CHAPTERS = [{"title": "One", "summary": "first"}, {"title": "Two", "summary": "second"}]


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps({"chapters": CHAPTERS}),
        "```json\n" + json.dumps({"chapters": CHAPTERS}) + "\n```",
        json.dumps([*CHAPTERS, {"title": "Three", "summary": "extra: dropped"}]),
        "Here it is:\n1. One: first\n2) Two: second\n",
        "Chapter 1: One: first\nChapter 2: Two: second",
    ],
)
def test_an_outline_is_read_from_json_fenced_json_or_numbered_lines(answer: str) -> None:
    assert outline.parse_outline(answer, 2) == [
        {"index": 1, "title": "One", "summary": "first"},
        {"index": 2, "title": "Two", "summary": "second"},
    ]


@pytest.mark.parametrize(
    ("answer", "found"),
    [("", 0), ("I cannot help with that.", 0), (json.dumps({"chapters": [{"title": "Only"}]}), 1), ("{}", 0)],
)
def test_an_answer_with_too_few_chapters_is_refused_saying_how_many(answer: str, found: int) -> None:
    with pytest.raises(ValueError, match=rf"found {found} chapter\(s\) in it, 2 asked for"):
        outline.parse_outline(answer, 2)


def test_the_outline_prompt_asks_for_the_count_the_audience_and_json() -> None:
    system, user = outline.outline_messages("tides", 4, "children", None)
    assert system["role"] == "system" and user["role"] == "user"
    assert "an outline of 4 chapters for a text about: tides." in user["content"]
    assert "The readers: children." in user["content"] and "with exactly 4 chapters" in user["content"]
    assert "Notes from the author" not in user["content"]


def test_the_chapter_prompt_carries_the_outline_and_the_chapter() -> None:
    items = [{"index": 1, "title": "One"}, {"index": 2, "title": "Two", "summary": "second"}]
    [_, user] = chapter.chapter_messages("tides", items[1], items, 300, "plain")
    assert "1. One\n2. Two" in user["content"] and 'Write chapter 2: "Two".' in user["content"]
    assert "What it covers: second" in user["content"] and "About 300 words" in user["content"]


def test_chapters_are_joined_in_index_order_whatever_order_they_arrive_in() -> None:
    draft = polish.join_chapters(
        "Tides", [{"index": 2, "title": "Two", "text": "b\n"}, {"index": 1, "title": "One", "text": " a"}]
    )
    assert draft == "# Tides\n\n## 1. One\n\na\n\n## 2. Two\n\nb\n"


def test_a_repeated_chapter_index_is_refused() -> None:
    with pytest.raises(ValueError, match=r"chapter index\(es\) \[1\] appear more than once"):
        polish.join_chapters("T", [{"index": 1, "title": "a", "text": "x"}, {"index": 1, "title": "b", "text": "y"}])


@pytest.mark.parametrize("folder", ["outline", "write_chapter", "polish"])
def test_each_writing_example_input_is_accepted_and_the_runtime_is_a_factory(folder: str) -> None:
    manifest = load_manifest(SKILLS / "writing" / folder)
    assert manifest.runtime.factory and manifest.risk == "write_draft"
    validate_input(manifest, example_input(f"writing/{folder}"))
