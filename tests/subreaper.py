"""Runs a command as a child subreaper: the processes it leaves behind are
reaped here, not left as zombies.

Patroni starts PostgreSQL the way pg_ctl does, leaving the postmaster to init.
Here init may be a process that never reaps (this machine's does not): a
postmaster killed by a test would stay a zombie, which psutil, and so Patroni,
still counts as a running process, and the crash would not be seen as one.
Run under this script, the orphaned postmaster becomes this process's child
instead, and its death is seen at once, as under a real init.

    python tests/subreaper.py PIDFILE COMMAND [ARG...]

writes the command's pid to PIDFILE, forwards SIGTERM and SIGINT to it, and
exits once the command and everything it left behind have ended.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def main(pidfile: str, command: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)  # noqa: S606 - the caller's command
        finally:
            os._exit(127)
    Path(pidfile).write_text(f"{pid}\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _: os.kill(pid, signum))
    code = 0
    while True:
        try:
            ended, status = os.wait()
        except ChildProcessError:
            return code
        except InterruptedError:  # pragma: no cover - PEP 475 retries it
            continue
        if ended == pid:
            code = os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
