"""The skill cache on disk: several worker processes unpack installed skills into one folder at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.skills import folder_checksum, pack_skill
from tests.helpers import ROOT, wait_until

EXAMPLE = ROOT / "examples" / "skills" / "text_stats"
# One worker process: wait for the start signal, then unpack the archive into `versions` folders.
UNPACKER = """
import sys, time
from pathlib import Path
from worker.skills.loader import unpack_archive

archive, cache, go, versions = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
for i in range(versions):
    unpack_archive(archive, cache / "text.stats" / f"1.0.{i}-0123456789abcdef")
"""


def test_several_processes_unpacking_the_same_skills_into_one_cache_all_succeed(tmp_path: Path) -> None:
    """Each folder appears whole, once, whatever the interleaving; no process fails and none of the
    staging folders is left behind."""
    archive = tmp_path / "skill.tar.gz"
    archive.write_bytes(pack_skill(EXAMPLE))
    cache, go, versions = tmp_path / "skill-cache", tmp_path / "go", 15
    logs = [tmp_path / f"unpacker-{i}.log" for i in range(6)]
    unpackers = []
    for log in logs:
        with log.open("wb") as out:
            unpackers.append(
                subprocess.Popen(
                    [sys.executable, "-c", UNPACKER, str(archive), str(cache), str(go), str(versions)],
                    cwd=ROOT,
                    stderr=out,
                )
            )
    try:
        go.touch()
        wait_until(lambda: all(p.poll() is not None for p in unpackers), timeout_s=60, what="the unpackers finish")
    finally:
        for process in unpackers:
            process.kill()
            process.wait()
    errors = [log.read_text() for p, log in zip(unpackers, logs, strict=True) if p.returncode != 0]
    assert not errors, errors[0]
    folders = sorted((cache / "text.stats").iterdir())
    assert [f.name for f in folders] == sorted(f"1.0.{i}-0123456789abcdef" for i in range(versions))
    assert {folder_checksum(f) for f in folders} == {folder_checksum(EXAMPLE)}
