"""A worker with a skill of your own, next to the built-ins (see docs/Skills.md).

python examples/custom_skill_worker.py --nats nats://127.0.0.1:4222
claw submit text.word_count --input '{"text": "to be or not to be"}' --wait
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import Counter
from typing import Any

from common import InvalidInputError, configure_logging, load_config
from worker import TaskContext, Worker, builtin_registry, skill


@skill("text.word_count", description="counts words")
async def word_count(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    """Count the words of `text`; reports progress and logs a line to the task's timeline."""
    text = input.get("text")
    if not isinstance(text, str):
        raise InvalidInputError("word_count needs {'text': '...'}")  # not retried: the input is wrong
    ctx.log(f"counting {len(text)} characters")
    counts = Counter(text.lower().split())
    ctx.progress(100, "counted")
    return {"words": sum(counts.values()), "top": counts.most_common(3)}


async def main(nats_url: str) -> None:
    config = load_config(overrides={"nats": {"url": nats_url}})
    configure_logging(config.log, process="worker")
    skills = builtin_registry()
    skills.register(word_count)
    worker = await Worker.start(config, skills=skills)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    asyncio.run(main(parser.parse_args().nats))
