"""What imports what across the checkout: the package ships without the tools and
the tests, the benchmark stands without the tests, and the tests take their
infrastructure from tests/ and tools/scratch.py, never from the benchmark."""

from __future__ import annotations

import ast
from pathlib import Path

CHECKOUT = Path(__file__).parents[2]
# The benchmark's own tests, the only ones that import it.
BENCHMARK_TESTS = {
    "tests/test_bench.py",
    "tests/unit/test_bench_wrk.py",
    "tests/unit/test_bench_live.py",
}


def imports(where: str) -> dict[str, set[str]]:
    """Each module under a folder, or one module (its path from the checkout):
    the absolute module names it imports."""
    found = {}
    top = CHECKOUT / where
    for path in sorted(top.rglob("*.py") if top.is_dir() else [top]):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[path.relative_to(CHECKOUT).as_posix()] = names
    return found


def within(names: set[str], *packages: str) -> set[str]:
    """The names that are, or are inside, one of the packages."""
    return {n for n in names if any(n == p or n.startswith(f"{p}.") for p in packages)}


def test_the_package_imports_neither_the_tools_nor_the_tests() -> None:
    wrong = {
        module: within(names, "tools", "tests")
        for module, names in imports("pocket").items()
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_benchmark_imports_nothing_from_the_tests() -> None:
    modules = {**imports("tools/bench"), **imports("tools/scratch.py")}
    wrong = {module: within(names, "tests") for module, names in modules.items()}
    assert {module: names for module, names in wrong.items() if names} == {}


def test_only_the_benchmark_s_own_tests_import_it() -> None:
    wrong = {
        module: within(names, "tools.bench", "pocket.bench")
        for module, names in imports("tests").items()
        if module not in BENCHMARK_TESTS
    }
    assert {module: names for module, names in wrong.items() if names} == {}
    for module in BENCHMARK_TESTS:  # still there, or this test guards nothing
        assert within(imports("tests")[module], "tools.bench"), module
