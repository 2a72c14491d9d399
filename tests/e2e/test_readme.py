"""The README's runnable examples run: the quick start against a real server."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
from conftest import TOKENS, e2e_settings, start_server, stop_server

_README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(tag: str) -> list[str]:
    return re.findall(rf"```python {tag}\n(.*?)```", _README.read_text(), flags=re.S)


def test_the_readme_has_a_runnable_quick_start() -> None:
    assert len(_blocks("quickstart")) == 1


def test_the_readme_quick_start_records_and_shows_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = start_server(e2e_settings(tmp_path, "sqlite"))
    try:
        (tmp_path / "pdl-data").mkdir()
        (tmp_path / "pdl-data" / "admin.token").write_text(TOKENS["everything"] + "\n")
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(_blocks("quickstart")[0], {"TARGET": served.target})  # noqa: S102 (the README's own code)
    finally:
        stop_server(served)
    printed = out.getvalue()
    assert "recorded at log position" in printed
    assert "FAILED_PRECONDITION SENSITIVE_CATEGORY_WITHOUT_CONSENT §1(5)" in printed
    assert "['network_log.ip_address']" in printed
    assert os.getcwd() == str(tmp_path)
