"""writing.polish: joins written chapters (writing.write_chapter results, in any order) into one
Markdown draft in chapter order and has the worker's configured model polish it; the result is
returned and stored as the artifact `book.md`. A factory skill for the reason writing.outline gives.
"""

from __future__ import annotations

from typing import Any

SKILL = "writing.polish"
BOOK_NAME = "book.md"


def join_chapters(title: str, chapters: list[dict[str, Any]]) -> str:
    """The chapters as one Markdown draft, in index order; raises ValueError on a repeated index."""
    ordered = sorted(chapters, key=lambda c: c["index"])
    indexes = [c["index"] for c in ordered]
    if len(set(indexes)) != len(indexes):
        repeated = sorted({i for i in indexes if indexes.count(i) > 1})
        raise ValueError(f"chapter index(es) {repeated} appear more than once")
    parts = [f"# {title}"] + [f"## {c['index']}. {c['title']}\n\n{c['text'].strip()}" for c in ordered]
    return "\n\n".join(parts) + "\n"


def polish_messages(draft: str, instructions: str | None) -> list[dict[str, str]]:
    """The chat messages that ask for the polished text."""
    ask = (
        "Polish this draft: smooth the transitions between chapters, remove repetition, keep every heading "
        "and the meaning. Answer with the polished Markdown only."
    )
    if instructions:
        ask += f"\nAlso: {instructions}"
    return [
        {"role": "system", "content": "You are an editor. You improve a text without changing what it says."},
        {"role": "user", "content": f"{ask}\n\n{draft}"},
    ]


def skills(config: Any) -> list[Any]:
    """The factory the manifest names: the handler closes over the worker's LLM client."""
    from common import InvalidInputError, RetryableError
    from worker import LlmTool, Skill

    llm = LlmTool(config.tools)

    async def polish(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
        """{topic, chapters: [...], title?, instructions?, model?} -> {title, markdown, book artifact, ...}."""
        title = input.get("title") or input["topic"]
        try:
            draft = join_chapters(title, input["chapters"])
        except ValueError as exc:
            raise InvalidInputError(f"{SKILL}: {exc}") from None
        request: dict[str, Any] = {"messages": polish_messages(draft, input.get("instructions"))}
        if input.get("model"):
            request["model"] = input["model"]
        answer = await llm.chat(ctx, request)
        markdown = (answer["message"]["content"] or "").strip()
        if not markdown:
            raise RetryableError(f"{SKILL}: the model answered with no text")
        ref = await ctx.put_artifact(BOOK_NAME, markdown + "\n", "text/markdown")
        ctx.log(f"polished {len(input['chapters'])} chapters into {len(markdown.split())} words")
        return {
            "title": title,
            "markdown": markdown + "\n",
            "chapters": len(input["chapters"]),
            "words": len(markdown.split()),
            "draft_words": len(draft.split()),
            "book": {"name": ref.name, "sha256": ref.sha256, "size": ref.size, "content_type": ref.content_type},
            "model": answer["model"],
            "usage": answer["usage"],
        }

    return [Skill(SKILL, polish, "join chapters and polish them")]
