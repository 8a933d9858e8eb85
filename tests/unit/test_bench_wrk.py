"""The benchmark's HTTP part without a server: reading wrk's output, the Lua it
is given, a run with failed answers, and no wrk at all."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from tools.bench import http_load
from tools.bench.figures import TINY, Results
from tools.bench.http_figures import record
from tools.bench.http_load import WRK_MISSING
from tools.bench.report import report
from tools.bench.wrk import (
    BenchUser,
    Load,
    lua_string,
    parse_wrk,
    write_posts,
    write_script,
)

WRK_OUTPUT = """\
Running 8s test @ http://127.0.0.1:40123
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.71ms    4.09ms    1.20s    71.89%
    Req/Sec   584.15     98.61     0.94k    70.73%
  Latency Distribution
     50%  812.00us
     75%   15.78ms
     90%   18.78ms
     99%    1.25s
  9385 requests in 8.10s, 4.05MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   1158.66
Transfer/sec:    511.35KB
pocket-bench: made 9402 answered 9385 statuses 200=9382 409=3
"""


def test_wrk_s_output_is_read_in_milliseconds() -> None:
    load = parse_wrk(WRK_OUTPUT)
    assert load.rate == 1158.66
    assert load.p50_ms == pytest.approx(0.812)
    assert load.p99_ms == 1250.0
    assert (load.made, load.answered, load.ok) == (9402, 9385, 9382)
    assert load.statuses == {200: 9382, 409: 3}
    assert load.socket_errors == 3
    assert load.failures == 6


def test_output_without_the_script_s_counts_is_refused() -> None:
    with pytest.raises(RuntimeError, match="cannot read"):
        parse_wrk(WRK_OUTPUT.replace("pocket-bench:", "something else:"))


def test_a_run_with_failed_answers_is_a_note_not_a_figure() -> None:
    results = Results("sqlite")
    record(results, "http_add_money", [parse_wrk(WRK_OUTPUT)], p50=True)
    assert results.figures == {}
    assert results.notes == [
        "http_add_money left out: answers 9,382 x 200, 3 x 409; 3 socket errors"
    ]
    assert "sqlite: http_add_money left out" in report([results], TINY)


def test_two_servers_add_their_rates_and_keep_the_worse_p99() -> None:
    results = Results("postgres")
    loads = [
        Load(100.0, 5.0, 20.0, 101, 100, {200: 100}, 0),
        Load(50.0, 9.0, 30.0, 51, 50, {200: 50}, 0),
    ]
    record(results, "http_two_processes", loads)
    assert results.figures == {
        "http_two_processes": 150.0,
        "http_two_processes_p99": 30.0,
    }


def test_the_script_holds_each_user_s_id_and_token(tmp_path: Path) -> None:
    users = [BenchUser(7, "pkt_a-b", uuid4()), BenchUser(8, "pkt_c", uuid4())]
    script = write_script(tmp_path / "users.lua", users).read_text()
    seven, eight = lua_string("/users/7/add_money"), lua_string("/users/8/add_money")
    assert f'{{{seven}, "pkt\\095a\\045b"}},' in script
    assert f'{{{eight}, "pkt\\095c"}},' in script
    assert 'wrk.format("POST", target[1]' in script


def test_a_script_posts_to_any_path_given(tmp_path: Path) -> None:
    path = "/accounts/0a/deposit"
    script = write_posts(tmp_path / "library.lua", [(path, "")]).read_text()
    assert f'{{{lua_string(path)}, ""}},' in script


def test_a_lua_string_escapes_every_byte_but_letters_and_digits() -> None:
    assert lua_string('a"1\\\n') == '"a\\0341\\092\\010"'
    assert lua_string("é") == '"\\195\\169"'


def test_without_wrk_the_http_figures_are_left_out_and_the_table_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_load, "wrk_command", lambda: None)
    results = Results("sqlite")
    # Nothing is opened before wrk is looked for: no Pocket, no database.
    http_load.http_api(None, "sqlite:///unused.db", TINY, results)  # type: ignore[arg-type]
    assert results.figures == {}
    assert results.notes == [WRK_MISSING]
    table = report([results], TINY)
    assert f"sqlite: {WRK_MISSING}" in table
    assert "POST add_money, 64 users, 1 server" in table
