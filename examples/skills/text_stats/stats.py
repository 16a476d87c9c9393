"""text.stats: reads {"text": ..., "top": n} on stdin, prints the counts as JSON on stdout."""

import json
import sys
from collections import Counter

task = json.load(sys.stdin)
text = task["text"]
words = [w.strip(".,;:!?\"'()[]").lower() for w in text.split()]
words = [w for w in words if w]
json.dump(
    {
        "words": len(words),
        "lines": text.count("\n") + (1 if text and not text.endswith("\n") else 0),
        "characters": len(text),
        "top": Counter(words).most_common(task.get("top", 5)),
    },
    sys.stdout,
)
