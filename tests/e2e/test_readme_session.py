"""The README's curl session and CLI steps, pasted in order, work: run here as a
new user would run them, against a real `pocket serve` on the default SQLite file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import POCKET, serve

pytestmark = pytest.mark.e2e
README = Path(__file__).parents[2] / "README.md"
README_BASE = "http://127.0.0.1:5000"


def session_script() -> str:
    """Every sh block of the README's "A session with curl", in order."""
    text = README.read_text()
    start = text.index("## A session with curl")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end], re.DOTALL)
    assert len(blocks) >= 4, "the session lost its shell blocks"
    return "\n".join(blocks)


def test_the_readmes_curl_session_works_pasted_in_order(tmp_path: Path) -> None:
    server, api = serve(tmp_path, {})
    try:
        script = session_script().replace(README_BASE, api.base_url)
        # `make status` and `make verify` are the venv's pocket, as the README says.
        script = re.sub(r"^make (status|verify)", rf"{POCKET} \1", script, flags=re.M)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.close()
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert '"balance":"20.00"' in out
    assert '"balance":"15.00"' in out
    assert '"code":"insufficient_funds"' in out
    assert '"transfer":{' in out  # the transfer to the second user went through
    assert '"code":"wallet_not_empty"' in out  # the closing, while money is left
    # Asking about the past: version 2 held 20.00, the moment after the draw 15.00.
    balances = re.findall(
        r'"balance":"([0-9.]+)","version":\d+,"closed":\w+,"as_of"', out
    )
    assert balances == ["20.00", "15.00"], out
    for answer in ("internal_error", "not_found", "validation_failed", "Traceback"):
        assert answer not in out + done.stderr
    assert "wallet_records" in out  # make status
    assert "0 mismatch(es)" in out  # make verify
