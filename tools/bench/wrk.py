"""wrk, the load generator the benchmark's HTTP figures come from (in C, so the
clients cost the two cores little beside the server they measure): the Lua
script it is given, the processes run against each server at once, and what it
measured, read from its output."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

from tools.bench.figures import CALLERS, Sizes

# wrk's threads (CALLERS connections), the seconds after which it calls an answer
# an error; what each add_money adds, and its body.
WRK_THREADS = 2
WRK_TIMEOUT = 30
AMOUNT = Decimal("1.00")
ADD_MONEY_BODY = json.dumps({"amount": str(AMOUNT), "source": "bench"})
MILLISECONDS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class BenchUser(NamedTuple):
    """A signed-up user: what a request needs, and the wallet its money goes to."""

    user_id: int
    token: str
    wallet_id: UUID


@dataclass(frozen=True)
class Load:
    """What one wrk process measured against one server."""

    rate: float  # wrk's Requests/sec: every answer, whatever its status
    p50_ms: float
    p99_ms: float
    # Requests the script made: those wrk sent, and one it made to check the
    # script before starting. At most one a connection is unanswered at the end.
    made: int
    answered: int
    statuses: dict[int, int]
    socket_errors: int

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)

    @property
    def failures(self) -> int:
        """Answers other than 200, and connect, read, write and timeout errors."""
        return self.answered - self.ok + self.socket_errors


# wrk's script (for str.format). Each wrk thread runs its own copy; setup and
# done run in wrk's main interpreter, which reads the threads' counts at the end.
# The seed comes after `--` on wrk's command line.
WRK_SCRIPT = """\
-- Written by Pocket's benchmark (tools/bench).
local targets = {{
{targets}
}}
local body = {body}
local threads = {{}}
made = 0
answered = 0
statuses = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  math.randomseed(tonumber(args[1]) * 16 + thread_number)
end

function request()
  made = made + 1
  if #targets == 0 then
    return wrk.format("GET", "/health")
  end
  local target = targets[math.random(#targets)]
  local headers = {{
    ["Authorization"] = "Bearer " .. target[2],
    ["Content-Type"] = "application/json",
  }}
  return wrk.format("POST", target[1], headers, body)
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total_made, total_answered, total_statuses = 0, 0, {{}}
  for _, thread in ipairs(threads) do
    total_made = total_made + thread:get("made")
    total_answered = total_answered + thread:get("answered")
    for status, count in pairs(thread:get("statuses")) do
      total_statuses[status] = (total_statuses[status] or 0) + count
    end
  end
  local counts = {{}}
  for status, count in pairs(total_statuses) do
    table.insert(counts, status .. "=" .. count)
  end
  io.write(string.format("pocket-bench: made %d answered %d statuses %s\\n",
    total_made, total_answered, table.concat(counts, " ")))
end
"""


def wrk_command() -> str | None:
    """Where wrk is installed, or None."""
    return shutil.which("wrk")


def write_script(path: Path, users: list[BenchUser]) -> Path:
    """wrk's Lua script: add_money for a random one of the users per request (or,
    with no users, GET /health), counting what it made and each answer's status."""
    targets = [(f"/users/{u.user_id}/add_money", u.token) for u in users]
    return write_posts(path, targets)


def write_posts(path: Path, targets: list[tuple[str, str]]) -> Path:
    """wrk's Lua script: the money body POSTed to a random one of the targets'
    paths per request, with its bearer token (or, with no targets, GET /health)."""
    rows = "\n".join(
        f"  {{{lua_string(where)}, {lua_string(token)}}}," for where, token in targets
    )
    path.write_text(WRK_SCRIPT.format(targets=rows, body=lua_string(ADD_MONEY_BODY)))
    return path


def lua_string(text: str) -> str:
    """A Lua string literal: letters and digits as they are, every other byte as
    a decimal escape."""
    return (
        '"'
        + "".join(
            chr(b) if bytes([b]).isalnum() else f"\\{b:03d}" for b in text.encode()
        )
        + '"'
    )


def drive(ports: list[int], script: Path | list[Path], sizes: Sizes) -> list[Load]:
    """wrk against each port at once (with one script, or a script per port),
    the connections and threads split evenly."""
    connections = CALLERS // len(ports)
    threads = max(1, WRK_THREADS // len(ports))
    scripts = script if isinstance(script, list) else [script] * len(ports)
    running = [
        start_wrk(port, each, sizes.http_seconds, connections, threads)
        for port, each in zip(ports, scripts, strict=True)
    ]
    return [finish_wrk(process, sizes.http_seconds) for process in running]


def start_wrk(
    port: int, script: Path, seconds: int, connections: int, threads: int
) -> subprocess.Popen[str]:
    """One wrk process, started (its script seeded at random)."""
    command = wrk_command()
    assert command is not None
    return subprocess.Popen(
        [
            command,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            # A slow answer is a latency to report, not an error.
            f"--timeout={WRK_TIMEOUT}s",
            "--latency",
            f"--script={script}",
            f"http://127.0.0.1:{port}",
            "--",
            str(random.randrange(1, 2**30)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str], seconds: int) -> Load:
    """Waits for a wrk process; what it measured."""
    stdout, stderr = process.communicate(timeout=seconds + WRK_TIMEOUT + 30)
    if process.returncode != 0:
        msg = f"wrk failed ({process.returncode}): {stderr.strip() or stdout.strip()}"
        raise RuntimeError(msg)
    return parse_wrk(stdout)


def parse_wrk(output: str) -> Load:
    """A Load from wrk's output (with --latency, and the script's own line)."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    counts = re.search(
        r"^pocket-bench: made (\d+) answered (\d+) statuses ?(.*)$",
        output,
        re.MULTILINE,
    )
    percentiles = {
        int(share): float(number) * MILLISECONDS[unit]
        for share, number, unit in re.findall(
            r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE
        )
    }
    if rate is None or counts is None or not {50, 99} <= percentiles.keys():
        msg = f"wrk said what the benchmark cannot read:\n{output}"
        raise RuntimeError(msg)
    errors = re.search(r"Socket errors: ([^\n]*)", output)
    return Load(
        rate=float(rate[1]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        made=int(counts[1]),
        answered=int(counts[2]),
        statuses={
            int(status): int(count)
            for status, count in (pair.split("=") for pair in counts[3].split())
        },
        socket_errors=sum(map(int, re.findall(r"\d+", errors[1] if errors else ""))),
    )
