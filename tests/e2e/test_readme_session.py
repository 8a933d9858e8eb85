"""The README's curl session and CLI steps, pasted in order, work: run here as a
new user would run them, against a real `pocket serve` on the default SQLite file,
in bash and in dash (a POSIX shell with nothing of bash's), with no tool but curl,
python3 and POSIX utilities (no GNU date, no uuidgen, no jq), leaving no file behind
in the folder they are run from; and the README's Python, pasted into a file, runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import POCKET, serve

pytestmark = pytest.mark.e2e
README = Path(__file__).parents[2] / "README.md"
README_BASE = "http://127.0.0.1:5000"
# The admin token the session says make run was started with.
README_ADMIN_TOKEN = "a-long-random-secret-of-yours"
# All the session may run, beside the shell: what any POSIX system has, and the
# two tools the README asks for.
TOOLS = ("curl", "mktemp", "tee", "rm")


def section(title: str) -> str:
    """The README's section of that title, up to the next one."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def session_script() -> str:
    """Every sh block of the README's "A session with curl", in order."""
    blocks = re.findall(r"```sh\n(.*?)```", section("A session with curl"), re.DOTALL)
    assert len(blocks) >= 4, "the session lost its shell blocks"
    return "\n".join(blocks)


def files_under(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*")}


def only_the_tools(folder: Path) -> str:
    """A PATH of one folder that holds the TOOLS and python3, nothing else."""
    folder.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not installed"
        (folder / tool).symlink_to(found)
    # The interpreter itself: a `python3` found on PATH may be a shim (pyenv's
    # is a bash script) that needs more than this PATH holds.
    (folder / "python3").symlink_to(Path(sys.executable).resolve())
    return str(folder)


@pytest.mark.parametrize(
    "shell",
    [["bash", "-euo", "pipefail", "-c"], ["dash", "-eu", "-c"]],
    ids=["bash", "dash"],
)
def test_the_readmes_curl_session_works_pasted_in_order(
    tmp_path: Path, shell: list[str]
) -> None:
    # The checkout a new user runs `make run` in, and pastes the session in.
    checkout = tmp_path / "checkout"
    scratch = tmp_path / "tmp"  # where mktemp makes its folders (TMPDIR)
    checkout.mkdir()
    scratch.mkdir()
    shell_path = shutil.which(shell[0])
    assert shell_path is not None, f"{shell[0]} is not installed"
    path = only_the_tools(tmp_path / "bin")
    server, api = serve(checkout, {"POCKET_ADMIN_TOKEN": README_ADMIN_TOKEN})
    try:
        before = files_under(checkout)
        script = session_script().replace(README_BASE, api.base_url)
        # `make status` and `make verify` are the venv's pocket, as the README says.
        script = re.sub(r"^make (status|verify)", rf"{POCKET} \1", script, flags=re.M)
        done = subprocess.run(
            [shell_path, *shell[1:], script],
            cwd=checkout,
            env={**os.environ, "PATH": path, "TMPDIR": str(scratch)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        after = files_under(checkout)
    finally:
        server.close()
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert '"balance":"20.00"' in out
    assert '"balance":"15.00"' in out
    assert '"code":"insufficient_funds"' in out
    assert '"transfer":{' in out  # the transfer to the second user went through
    assert '"code":"wallet_not_empty"' in out  # the closing, while money is left
    # A hold of 6.00, 2.50 of it captured: the rest released, nothing held after.
    assert '"held":"6.00","available":"1.50"' in out
    assert '"status":"captured"' in out
    assert '"captured":"2.50","released":"3.50"' in out
    assert '"balance":"5.00","version":7,"closed":false,"held":"0.00"' in out
    # Asking about the past: version 2 held 20.00, the moment after the draw 15.00.
    balances = re.findall(
        r'"balance":"([0-9.]+)","version":\d+,"closed":\w+,[^{}]*"as_of"', out
    )
    assert balances == ["20.00", "15.00"], out
    for answer in ("internal_error", "not_found", "validation_failed", "Traceback"):
        assert answer not in out + done.stderr
    # The webhook's first delivery, printed by the session's own receiver.
    delivered = re.findall(r"^delivered: (\{.*\})$", out, re.M)
    assert len(delivered) == 1, out
    assert '"type":"money.added"' in delivered[0]
    assert '"amount":"1.00","balance_after":"6.00"' in delivered[0]
    assert "wallet_records" in out  # make status
    assert "0 mismatch(es)" in out  # make verify
    # Nothing new in the checkout (no gabriela.json), and the scratch folder gone.
    assert after - before == set()
    assert files_under(scratch) == set()


def test_the_readmes_python_runs(tmp_path: Path) -> None:
    blocks = re.findall(
        r"```python\n(.*?)```", section("Embedding Pocket in Python"), re.DOTALL
    )
    assert len(blocks) == 2, "the embedding section lost its Python blocks"
    # Only what the README's code says decides where the data goes.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("POCKET_DATABASE_URL", "PERSISTENCE_MODULE")
    }
    outputs = []
    for number, block in enumerate(blocks):
        program = tmp_path / f"embedding_{number}.py"
        program.write_text(block)
        done = subprocess.run(
            [sys.executable, str(program)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    # The first prints each transaction of the wallet, the transfers' too.
    assert [line.split()[:2] for line in outputs[0].splitlines()] == [
        ["IN", "20.00"],
        ["OUT", "5.00"],
        ["OUT", "5.00"],
    ]
    assert (tmp_path / "wallets.db").exists()  # the second's SQLite file
