"""The skill-side trust rules' building blocks: reserved names, the risk order, deterministic packing."""

from __future__ import annotations

import os
from pathlib import Path

from common.skills import Risk, archive_sha256, builtin_manifests, pack_skill, reserved_names

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "skills" / "text_stats"


def test_the_reserved_names_are_exactly_the_builtin_skills() -> None:
    assert reserved_names() == {m.name for m in builtin_manifests()}
    assert {"shell.exec", "python.exec", "http.request", "fs.write"} <= reserved_names()


def test_risks_rank_from_read_only_to_destructive() -> None:
    ranked = sorted(Risk, key=lambda risk: risk.rank)
    assert ranked == [Risk.READ_ONLY, Risk.WRITE_DRAFT, Risk.WRITE_EXTERNAL, Risk.FUNDS, Risk.DESTRUCTIVE]


def test_packing_unchanged_files_gives_the_same_archive_bytes(tmp_path: Path) -> None:
    """A re-install uploads the archive whose sha256 the registry already holds."""
    folder = tmp_path / "skill"
    folder.mkdir()
    for path in EXAMPLE.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    first = pack_skill(folder)
    for path in folder.iterdir():
        os.utime(path, (1_000_000, 1_000_000))  # other times: the same bytes
    assert pack_skill(folder) == first
    (folder / "stats.py").write_text("# changed\n")
    assert archive_sha256(pack_skill(folder)) != archive_sha256(first)
