"""The Makefile's promise to a fresh clone: `make run` installs what Pocket needs
to run, `make test` and `make lint` add the development tools, in one venv.
Read with `make -n` (what make would run), on a venv path of the test's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def would_run(target: str, venv: Path) -> list[str]:
    """The commands `make target` would run with the venv at venv."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    return [line for line in commands if "pip install" in line]


def test_make_run_on_a_fresh_clone_installs_only_the_runtime_packages(
    tmp_path: Path,
) -> None:
    commands = would_run("run", tmp_path / ".venv")
    assert any(" -m venv " in line for line in commands)
    (install,) = installs(commands)
    assert install.endswith(" -e .")
    assert "dev" not in install
    assert commands[-1].startswith(f"{tmp_path}/.venv/bin/pocket serve")


@pytest.mark.parametrize("target", ["test", "lint"])
def test_make_test_and_lint_install_the_development_tools(
    tmp_path: Path, target: str
) -> None:
    (install,) = installs(would_run(target, tmp_path / ".venv"))
    assert install.endswith(" -e '.[dev]'")


@pytest.mark.parametrize("target", ["status", "verify", "follow", "migrate"])
def test_the_operator_commands_need_only_the_runtime_packages(
    tmp_path: Path, target: str
) -> None:
    (install,) = installs(would_run(target, tmp_path / ".venv"))
    assert install.endswith(" -e .")


def test_make_test_after_make_run_adds_the_tools_to_the_same_venv(
    tmp_path: Path,
) -> None:
    venv = tmp_path / ".venv"
    # What `make run` leaves: the venv, and the stamps it touches (newer than
    # pyproject.toml), as if its commands had run.
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    touched = [c for c in would_run("run", venv) if c.startswith("touch ")]
    assert touched
    for line in touched:
        Path(line.removeprefix("touch ")).touch()
    commands = would_run("test", venv)
    assert not any(" -m venv " in line for line in commands)  # the same venv
    (install,) = installs(commands)
    assert install.startswith(f"{venv}/bin/pip install")
    assert install.endswith(" -e '.[dev]'")
    assert installs(would_run("run", venv)) == []  # installed: nothing to do
