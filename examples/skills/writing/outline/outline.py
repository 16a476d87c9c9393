"""writing.outline: a topic -> an outline of N chapters, written by the model the worker is configured
with (`tools.llm_base_url`, `tools.llm_model`, the key in `tools.llm_api_key_env`).

A Python runtime with `factory: true`: the worker calls `skills(config)` once, and the handler calls
the model through the worker's own llm.chat client (worker/skills/tools/llm.py), so it gets the same
key handling, headers, timeouts and retry intents (429 after Retry-After, 5xx retried). A program
(`command:`) could not: its environment is scrubbed of the API key and it does not see the config.

The model is asked for JSON; an answer that is not an outline of at least N chapters fails the
attempt as retryable (another sample may get it right).
"""

from __future__ import annotations

import json
import re
from typing import Any

SKILL = "writing.outline"
NUMBERED = re.compile(r"^\s*(?:chapter\s+)?(\d+)[.):]\s*(.+?)\s*$", re.IGNORECASE)
FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def outline_messages(topic: str, chapters: int, audience: str | None, notes: str | None) -> list[dict[str, str]]:
    """The chat messages that ask for the outline."""
    ask = [
        f"Write an outline of {chapters} chapters for a text about: {topic}.",
        f"The readers: {audience}." if audience else "",
        f"Notes from the author: {notes}" if notes else "",
        'Answer with JSON only: {"chapters": [{"title": "...", "summary": "one or two sentences"}, ...]} '
        f"with exactly {chapters} chapters, in reading order.",
    ]
    return [
        {"role": "system", "content": "You are a book editor who plans clear, well-ordered texts."},
        {"role": "user", "content": "\n".join(line for line in ask if line)},
    ]


def parse_outline(content: str | None, chapters: int) -> list[dict[str, Any]]:
    """The first `chapters` chapters of the model's answer, as {index, title, summary}.

    Takes JSON ({"chapters": [...]} or a bare list, of objects with a title or of strings, in a code
    fence or not) and, failing that, numbered lines ("1. Title: summary"). Raises ValueError saying
    what is wrong.
    """
    text = FENCE.sub("", (content or "").strip())
    items = _json_items(text)
    if items is None:
        items = [m.group(2) for m in map(NUMBERED.match, text.splitlines()) if m]
    parsed = [_chapter(item) for item in items]
    parsed = [c for c in parsed if c["title"]]
    if len(parsed) < chapters:
        raise ValueError(f"found {len(parsed)} chapter(s) in it, {chapters} asked for")
    return [{"index": n, **c} for n, c in enumerate(parsed[:chapters], start=1)]


def _json_items(text: str) -> list[Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get("chapters", data.get("outline"))
    return data if isinstance(data, list) else None


def _chapter(item: Any) -> dict[str, str]:
    if isinstance(item, dict):
        return {"title": str(item.get("title") or "").strip(), "summary": str(item.get("summary") or "").strip()}
    title, _, summary = str(item).partition(": ")
    return {"title": title.strip(), "summary": summary.strip()}


def skills(config: Any) -> list[Any]:
    """The factory the manifest names: the handler closes over the worker's LLM client."""
    from common import RetryableError
    from worker import LlmTool, Skill

    llm = LlmTool(config.tools)

    async def outline(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
        """{topic, chapters?, audience?, notes?, model?, temperature?} -> {topic, chapters: [...]}."""
        count = int(input.get("chapters", 5))
        request: dict[str, Any] = {
            "messages": outline_messages(input["topic"], count, input.get("audience"), input.get("notes")),
            "temperature": input.get("temperature", 0.7),
        }
        if input.get("json_mode", True):
            request["response_format"] = {"type": "json_object"}
        if input.get("model"):
            request["model"] = input["model"]
        answer = await llm.chat(ctx, request)
        try:
            chapters = parse_outline(answer["message"]["content"], count)
        except ValueError as exc:
            raise RetryableError(f"{SKILL}: the model's answer is not an outline of {count} chapters: {exc}") from None
        ctx.log(f"outlined {count} chapters")
        return {"topic": input["topic"], "chapters": chapters, "model": answer["model"], "usage": answer["usage"]}

    return [Skill(SKILL, outline, "a topic -> an outline of N chapters")]
