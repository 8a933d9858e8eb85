"""A webhook receiver that takes its time (each delivery answered after a delay),
in a process of its own, for the benchmark's question: does a slow receiver slow
the API? (docs/webhooks.md: it must not.)"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tools.scratch import free_port

# How long each delivery waits for its answer: about ten times a slow receiver's
# usual, well under the sender's timeout, so every delivery succeeds, slowly.
DELAY_SECONDS = 0.5


@contextlib.contextmanager
def slow_receiver(delay: float = DELAY_SECONDS) -> Iterator[str]:
    """A slow receiver's URL while the block runs."""
    port = free_port()
    command = [sys.executable, "-m", "tools.bench.slow_receiver"]
    command += ["--port", str(port), "--delay", str(delay)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if time.monotonic() > deadline or process.poll() is not None:
                msg = "the slow receiver did not start"
                raise RuntimeError(msg)
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.close()
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=DELAY_SECONDS)
    args = parser.parse_args()

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(args.delay)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *rest: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Slow)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
