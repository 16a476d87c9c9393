"""draft.note: turns a title and points into a markdown draft (nothing is sent anywhere)."""

from typing import Any


async def draft(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Return the draft and how long it is; the task's timeline records that it was drafted."""
    audience = input.get("audience")
    lines = [f"# {input['title']}", ""]
    if audience:
        lines += [f"_For {audience}._", ""]
    lines += [f"- {point}" for point in input["points"]]
    markdown = "\n".join(lines) + "\n"
    ctx.log(f"drafted {len(input['points'])} points for review")
    return {"markdown": markdown, "characters": len(markdown), "status": "draft: not sent"}
