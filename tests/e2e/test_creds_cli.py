"""`claw creds` as a user runs it from the wrong folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ProcessPool, child_env

pytestmark = pytest.mark.e2e


def test_creds_list_without_a_credentials_folder_says_where_it_looked_not_that_none_were_issued(
    tmp_path: Path,
) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    missing = tmp_path / "elsewhere" / "auth"
    result = pool.run("creds", "list", "--auth-dir", str(missing))
    assert result.returncode == 1
    assert f"no credentials folder at {missing}" in result.stderr and "--auth-dir" in result.stderr
    assert "no credentials issued" not in result.stdout + result.stderr and "Traceback" not in result.stderr
