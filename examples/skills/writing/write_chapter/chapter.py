"""writing.write_chapter: one chapter of an outline (an item of writing.outline's `chapters`), written
by the model the worker is configured with. A factory skill for the reason writing.outline gives:
it calls the model through the worker's own llm.chat client.

Made to be fanned out: one task per chapter, each with the topic, its chapter and (for context) the
whole outline; writing.polish joins them in chapter order.
"""

from __future__ import annotations

from typing import Any

SKILL = "writing.write_chapter"


def chapter_messages(
    topic: str, chapter: dict[str, Any], outline: list[dict[str, Any]], words: int, style: str | None
) -> list[dict[str, str]]:
    """The chat messages that ask for one chapter."""
    plan = "\n".join(f"{c['index']}. {c['title']}" for c in outline)
    ask = [
        f"The text is about: {topic}.",
        f"Its outline:\n{plan}" if plan else "",
        f'Write chapter {chapter["index"]}: "{chapter["title"]}".',
        f"What it covers: {chapter['summary']}" if chapter.get("summary") else "",
        f"Style: {style}." if style else "",
        f"About {words} words of prose, without the chapter heading. Answer with the chapter's text only.",
    ]
    return [
        {"role": "system", "content": "You are a careful writer. You write one chapter at a time."},
        {"role": "user", "content": "\n\n".join(line for line in ask if line)},
    ]


def skills(config: Any) -> list[Any]:
    """The factory the manifest names: the handler closes over the worker's LLM client."""
    from common import RetryableError
    from worker import LlmTool, Skill

    llm = LlmTool(config.tools)

    async def write_chapter(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
        """{topic, chapter: {index, title, summary?}, outline?, words?, style?, model?} -> the chapter."""
        chapter = input["chapter"]
        messages = chapter_messages(
            input["topic"], chapter, input.get("outline") or [], int(input.get("words", 400)), input.get("style")
        )
        request: dict[str, Any] = {"messages": messages, "temperature": input.get("temperature", 0.8)}
        if input.get("model"):
            request["model"] = input["model"]
        answer = await llm.chat(ctx, request)
        text = (answer["message"]["content"] or "").strip()
        if not text:
            raise RetryableError(f"{SKILL}: the model answered with no text for chapter {chapter['index']}")
        ctx.log(f"wrote chapter {chapter['index']}: {len(text.split())} words")
        return {
            "index": chapter["index"],
            "title": chapter["title"],
            "text": text,
            "words": len(text.split()),
            "model": answer["model"],
            "usage": answer["usage"],
        }

    return [Skill(SKILL, write_chapter, "one chapter of an outline")]
