"""Running a checker in a child process with a deadline, so that one answer cannot stall a run.

Why a process: math-verify's own timeouts use ``signal.alarm``, which works only in the main thread of the
main interpreter (called from any other thread, math-verify raises ``ValueError``), counts whole seconds,
and cannot interrupt a long computation inside C (sympy expanding ``10^{10^{7}}`` into ten million digits).
Scoring runs in worker threads (the server, thread pools) as often as in the main thread, so the checker runs
in a persistent child process instead, one request at a time over a pipe: a request that misses its
deadline gets the child killed (and a fresh one started on the next call), and the caller an answer
"timeout" within the deadline, from any thread. The child lives as long as its parent needs it (it ends
when the pipe closes) and is restarted after a ``fork``, so a forked worker never shares its parent's pipe.
The child's address space is capped (:data:`MEMORY_LIMIT`), so an answer that asks for a huge number fails
in the child instead of swapping the machine.

Run as ``python -m slowthink.tasks.checkers.isolated module:function``: the child's side.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from .base import CheckResult

MEMORY_LIMIT = 4 << 30  # bytes of address space for the child
STARTUP_TIMEOUT = 300.0  # seconds for a child to import its checker (a loaded machine is slow, not broken)
READY = "ready"
ROOT = Path(__file__).resolve().parents[3]  # the folder holding the slowthink package


class CheckerTimeout(Exception):
    """The child did not answer within the deadline."""


class IsolatedChecker:
    """``function(gold, answer_text) -> CheckResult`` (named ``module:function``) run in a child process; calling
    it with a ``timeout`` in seconds returns a "timeout" result when the child takes longer. Thread-safe."""

    def __init__(self, function: str):
        self.function = function
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = os.getpid()
        self._buffer = b""
        atexit.register(self.close)

    def __call__(self, gold: str, answer_text: str, timeout: float) -> CheckResult:
        with self._lock:
            proc = self._ready_child()
            try:
                proc.stdin.write(json.dumps({"gold": gold, "text": answer_text}).encode() + b"\n")
                proc.stdin.flush()
                reply = json.loads(self._read_line(proc, timeout))
            except CheckerTimeout:
                self._stop()
                return CheckResult(False, None, f"timeout: checking took longer than {timeout:g}s")
            except (OSError, ValueError) as e:  # the child died (out of memory, killed): a fresh one next time
                self._stop()
                return CheckResult(False, None, f"checker process failed: {type(e).__name__}: {e}")
        if "error" in reply:
            raise RuntimeError(f"{self.function} raised {reply['error']}")
        return CheckResult(bool(reply["correct"]), reply["extracted"], reply["reason"])

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the child ------------------------------------------------------------------------------
    def _ready_child(self) -> subprocess.Popen:
        if self._owner != os.getpid():  # forked: the pipe belongs to the parent's child
            self._proc, self._owner, self._buffer = None, os.getpid(), b""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", __name__, self.function], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            line = self._read_line(self._proc, STARTUP_TIMEOUT)
        except (CheckerTimeout, OSError, ValueError) as e:
            self._stop()
            raise RuntimeError(f"the checker process for {self.function} did not start: {e}") from e
        if line != READY:
            self._stop()
            raise RuntimeError(f"the checker process for {self.function} did not start: it said {line!r:.200}")
        return self._proc

    def _read_line(self, proc: subprocess.Popen, timeout: float) -> str:
        """The child's next line, or CheckerTimeout once ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise CheckerTimeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise ValueError("the checker process exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _stop(self) -> None:
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):  # not on this platform: the deadline still holds
        pass


def run_child(function: str) -> None:
    """The child: answer ``{"gold", "text"}`` lines with ``{"correct", "extracted", "reason"}`` lines until
    stdin closes."""
    _limit_memory()
    module, _, name = function.partition(":")
    fn = getattr(importlib.import_module(module), name)
    fn("1", "1")  # warm up (imports, caches) before the first deadline starts
    out = sys.stdout
    out.write(READY + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            r = fn(request["gold"], request["text"])
            reply = {"correct": r.correct, "extracted": r.extracted, "reason": r.reason}
        except Exception as e:  # noqa: BLE001 - reported to the caller, who raises it
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    run_child(sys.argv[1])
