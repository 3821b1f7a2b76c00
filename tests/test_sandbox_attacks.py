"""Model-written code attacks the sandbox (slowthink.tools.sandbox): each test runs a hostile program and
checks the host from outside. Short timeouts keep the file fast."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from slowthink.tools import sandbox
from slowthink.tools.sandbox import SandboxUnavailable, run_python, sandbox_problem

REPO = Path(__file__).resolve().parents[1]
PROBLEM = sandbox_problem()
needs_bwrap = pytest.mark.skipif(PROBLEM is not None, reason=f"bubblewrap cannot run here: {PROBLEM}")


def host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def wait_gone(marker: str, within_s: float = 3.0) -> list[int]:
    end = time.monotonic() + within_s
    while (left := host_pids_with(marker)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


class Watcher(threading.Thread):
    """Counts host processes carrying ``marker`` while a run goes on (the most seen at once)."""

    def __init__(self, marker: str):
        super().__init__(daemon=True)
        self.marker, self.most, self.stop = marker, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.most = max(self.most, len(host_pids_with(self.marker)))
            time.sleep(0.02)


def test_refuses_without_bubblewrap_unless_allowed(monkeypatch, caplog):
    monkeypatch.setitem(sandbox._probe_cache, "/nonexistent/python3", "cannot start bubblewrap: test")
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="SLOWTHINK_UNSAFE_NO_SANDBOX"):
        run_python("print(1)", python="/nonexistent/python3")
    # The weaker mode, opted into, warns at every run (here with the real interpreter).
    real = sandbox.default_python()
    monkeypatch.setitem(sandbox._probe_cache, real, "cannot start bubblewrap: test")
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="slowthink.tools.sandbox"):
        first = run_python("print(6*7)", timeout_s=5)
        second = run_python("import os; print(sorted(os.environ))", timeout_s=5)
    assert first.stdout.strip() == "42" and not first.sandboxed
    assert "WITHOUT a sandbox" in caplog.text and caplog.text.count("WITHOUT a sandbox") == 2
    assert "SLOWTHINK" not in second.stdout  # even unsandboxed, the environment is not passed on


def test_unsandboxed_mode_enforces_timeout_and_memory(monkeypatch):
    real = sandbox.default_python()
    monkeypatch.setitem(sandbox._probe_cache, real, "cannot start bubblewrap: test")
    start = time.monotonic()
    looped = run_python("while True: pass", timeout_s=1, allow_unsandboxed=True)
    assert looped.timed_out and time.monotonic() - start < 4
    hog = run_python("x = bytearray(2 * 1024**3)", memory_mb=256, allow_unsandboxed=True)
    assert hog.exit_code != 0 and "MemoryError" in hog.stderr


@needs_bwrap
def test_runs_code_with_stdin_and_exit_code():
    result = run_python("import sys\ns = sys.stdin.read()\nprint(s.upper())\nsys.exit(3)", stdin="hello")
    assert result.stdout.strip() == "HELLO" and result.exit_code == 3 and result.sandboxed
    assert not result.timed_out and not result.truncated


@needs_bwrap
def test_endless_loop_times_out():
    start = time.monotonic()
    result = run_python("while True: pass", timeout_s=1)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 1 + 5  # killed at the timeout (plus slack), not at the CPU limit or never


@needs_bwrap
def test_fork_bomb_is_bounded_and_leaves_nothing():
    marker = f"forkbomb-{uuid.uuid4().hex}"
    bomb = "import os\\nwhile True:\\n    try: os.fork()\\n    except OSError: pass"
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', '{bomb}', '{marker}'])"
    watcher = Watcher(marker)
    watcher.start()
    result = run_python(code, timeout_s=2, max_processes=16)
    watcher.stop.set()
    watcher.join()
    assert result.timed_out
    assert 1 <= watcher.most <= 16  # the bomb ran (seen from the host) but never passed the process limit
    assert wait_gone(marker) == []


@needs_bwrap
def test_memory_bomb_fails_inside():
    result = run_python("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", memory_mb=256,
                        timeout_s=5)
    assert result.exit_code not in (0, None) and "MemoryError" in result.stderr


@needs_bwrap
def test_cannot_read_host_files(tmp_path):
    secret = tmp_path / "secret.txt"  # under the host's /tmp
    secret.write_text("host-secret-4711")
    targets = ["/etc/shadow", "/etc/passwd", "/root", str(REPO / "pyproject.toml"), str(REPO), "/work",
               str(secret), str(tmp_path), "/tmp/" + tmp_path.parts[2] if len(tmp_path.parts) > 2 else "/tmp"]
    code = ("import os\nfor p in %r:\n"
            "    try:\n        print(p, open(p).read()[:200] if os.path.isfile(p) else os.listdir(p))\n"
            "    except OSError as e:\n        print(p, 'DENIED', type(e).__name__)\n") % (targets,)
    result = run_python(code, timeout_s=5)
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == len(targets)
    assert all("DENIED" in line for line in lines), result.stdout
    assert "host-secret-4711" not in result.stdout + result.stderr


@needs_bwrap
def test_cannot_write_or_delete_outside(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    code = (f"import os, shutil\n"
            f"for f in (lambda: os.remove({str(sentinel)!r}), lambda: shutil.rmtree({str(tmp_path)!r}),\n"
            f"          lambda: open('/usr/pwned', 'w'), lambda: open('/pwned', 'w'),\n"
            f"          lambda: open({str(REPO / 'pwned.txt')!r}, 'w')):\n"
            f"    try:\n        f(); print('DID IT')\n    except OSError as e:\n        print('denied', e.errno)\n"
            f"open('mine.txt', 'w').write('fine'); print(open('mine.txt').read())\n")
    result = run_python(code, timeout_s=5)
    assert "DID IT" not in result.stdout and result.stdout.count("denied") == 5
    assert result.stdout.strip().endswith("fine")  # its own working folder is writable
    assert sentinel.read_text() == "keep me" and not (REPO / "pwned.txt").exists()


@needs_bwrap
def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (f"import socket\ns = socket.socket()\ns.settimeout(1)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
            f"except OSError as e:\n    print('refused', type(e).__name__)\n")
    try:
        result = run_python(code, timeout_s=5)
        with pytest.raises(socket.timeout):
            server.accept()  # nobody came
    finally:
        server.close()
    assert result.stdout.startswith("refused"), result.stdout + result.stderr


@needs_bwrap
def test_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("SLOWTHINK_TEST_SECRET", "env-secret-90210")
    code = ("import os, glob\nprint(dict(os.environ))\n"
            "for p in glob.glob('/proc/*/environ'):\n"
            "    try: print(open(p, 'rb').read())\n    except OSError: pass\n")
    result = run_python(code, timeout_s=5)
    assert result.exit_code == 0 and "PATH" in result.stdout
    assert "env-secret-90210" not in result.stdout + result.stderr


@needs_bwrap
def test_cannot_kill_parent_or_host_processes():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = (f"import os, signal\n"
                f"for pid in (os.getppid(), {os.getpid()}, {victim.pid}, -1, 1):\n"
                f"    try: os.kill(pid, signal.SIGKILL)\n    except OSError as e: print('no', pid, e.errno)\n"
                f"print('survived')\n")
        result = run_python(code, timeout_s=3)
        assert victim.poll() is None  # the host process the code named by pid is alive
        assert result.exit_code is not None or result.timed_out  # the run ended and we are still here
    finally:
        victim.kill()
        victim.wait()


@needs_bwrap
def test_huge_output_is_capped():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout_s=20,
                        max_output_bytes=100_000)
    assert result.truncated and not result.timed_out  # killed at the cap, not at the timeout
    assert len(result.stdout) == 100_000 and not result.ok


@needs_bwrap
def test_detached_children_die_with_the_run():
    marker = f"daemon-{uuid.uuid4().hex}"
    code = (f"import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'],\n"
            f"                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,\n"
            f"                 stderr=subprocess.DEVNULL)\n"
            f"time.sleep(1)\nprint('parent exits')\n")
    watcher = Watcher(marker)
    watcher.start()
    result = run_python(code, timeout_s=4)
    watcher.stop.set()
    watcher.join()
    assert result.exit_code == 0 and watcher.most == 1  # the daemon was running during the run
    assert wait_gone(marker) == []  # and nothing of it is left after


@needs_bwrap
def test_proc_shows_only_the_sandbox():
    code = ("import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint(len(pids))\n"
            "print(any(b'pytest' in open(f'/proc/{p}/cmdline', 'rb').read() for p in pids))\n")
    result = run_python(code, timeout_s=5)
    count, pytest_seen = result.stdout.split()
    assert int(count) <= 3 and pytest_seen == "False"  # bwrap's init, the code, maybe a reaped child


@needs_bwrap
def test_eight_runs_at_once():
    results: dict[int, str] = {}

    def one(i: int):
        results[i] = run_python(f"import time\ntime.sleep(0.2)\nprint({i} * {i})", timeout_s=10).stdout.strip()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]  # 10: two wait for a slot
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: str(i * i) for i in range(10)}


@needs_bwrap
def test_filling_the_disk_is_bounded():
    code = ("import os\nfor d in ('/sandbox', '/tmp', '/dev/shm', '/dev', '/'):\n    n = 0\n"
            "    try:\n        while n < 1000:\n"
            "            with open(f'{d}/fill{n}', 'wb') as f: f.write(b'x' * 2**20)\n            n += 1\n"
            "    except OSError:\n        pass\n    print(d, n)\n")
    result = run_python(code, timeout_s=10, tmpfs_mb=8)
    written = dict(line.split() for line in result.stdout.strip().splitlines())
    assert written == {"/sandbox": written["/sandbox"], "/tmp": written["/tmp"], "/dev/shm": written["/dev/shm"],
                       "/dev": "0", "/": "0"}, result.stdout + result.stderr
    assert all(1 <= int(written[d]) <= 8 for d in ("/sandbox", "/tmp", "/dev/shm"))


LIMITS_CODE = ("import resource as r\nprint([r.getrlimit(k)[0] for k in (r.RLIMIT_CPU, r.RLIMIT_AS, r.RLIMIT_NPROC,"
               " r.RLIMIT_FSIZE, r.RLIMIT_NOFILE)])")


@needs_bwrap
@pytest.mark.parametrize("prlimit", [True, False])
def test_rlimits_are_set_inside(monkeypatch, prlimit):
    if not prlimit:
        monkeypatch.setattr(sandbox, "PRLIMIT", "/nonexistent/prlimit")  # the Python preamble instead
    elif not os.access(sandbox.PRLIMIT, os.X_OK):
        pytest.skip("no prlimit on this machine")
    result = run_python(LIMITS_CODE, timeout_s=3, memory_mb=300, max_processes=9, max_file_mb=5, max_open_files=33)
    assert result.stdout.strip() == str([4, 300 * 2**20, 9, 5 * 2**20, 33]), result.stderr


def test_signal_deaths_read_alike_in_both_modes(monkeypatch):
    kill_self = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    if PROBLEM is None:
        assert run_python(kill_self, timeout_s=5).exit_code == 128 + 9
    real = sandbox.default_python()
    monkeypatch.setitem(sandbox._probe_cache, real, "cannot start bubblewrap: test")
    assert run_python(kill_self, timeout_s=5, allow_unsandboxed=True).exit_code == 128 + 9


def test_unsandboxed_daemon_does_not_hold_the_run(monkeypatch):
    real = sandbox.default_python()
    monkeypatch.setitem(sandbox._probe_cache, real, "cannot start bubblewrap: test")
    # The daemon keeps the output pipes open past the timeout (and then ends by itself): the run must end
    # when the script does, not wait for the pipes and report a timeout.
    code = ("import subprocess, sys\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(8)'], start_new_session=True)\n"
            "print('done')\n")
    result = run_python(code, timeout_s=5, allow_unsandboxed=True)
    assert result.stdout == "done\n" and result.exit_code == 0 and not result.timed_out


@needs_bwrap
def test_no_nested_user_namespace_so_no_tmpfs_without_a_cap():
    # In a user namespace of its own the code would be root there: it could mount a tmpfs with no size cap over
    # /tmp and fill the host's memory past tmpfs_mb.
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nuid, gid = os.getuid(), os.getgid()\n"
            "print('unshare', libc.unshare(0x10000000 | 0x00020000))\n"  # CLONE_NEWUSER | CLONE_NEWNS
            "try:\n    open('/proc/self/setgroups', 'w').write('deny')\n"
            "    open('/proc/self/uid_map', 'w').write(f'0 {uid} 1')\n"
            "    open('/proc/self/gid_map', 'w').write(f'0 {gid} 1')\nexcept OSError:\n    pass\n"
            "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\nn = 0\n"
            "try:\n    while n < 40:\n        open(f'/tmp/f{n}', 'wb').write(b'x' * 2**20)\n        n += 1\n"
            "except OSError:\n    pass\nprint('written', n)\n")
    result = run_python(code, timeout_s=10, tmpfs_mb=8)
    lines = dict(line.split() for line in result.stdout.strip().splitlines())
    assert lines["unshare"] == "-1" and lines["mount"] == "-1", result.stdout + result.stderr
    assert int(lines["written"]) <= 8  # the sandbox's own /tmp, capped


@needs_bwrap
def test_lone_surrogates_in_code_or_stdin_fail_inside_not_on_the_host():
    # JSON allows "\ud800": a tool call or a completion can carry a str that has no UTF-8 form.
    bad_code = run_python("print('never') # \ud800", timeout_s=5)
    assert bad_code.exit_code == 1 and "SyntaxError" in bad_code.stderr and not bad_code.stdout
    bad_stdin = run_python("import sys\nprint(len(sys.stdin.buffer.read()))", stdin="a\ud800", timeout_s=5)
    assert bad_stdin.stdout.strip() == "4" and bad_stdin.exit_code == 0  # 'a' and the surrogate's three bytes
    raw_byte = run_python("import sys\nprint(sys.stdin.buffer.read())", stdin="\udcff", timeout_s=5)
    assert raw_byte.stdout.strip() == r"b'\xff'"  # an undecodable byte read as a surrogate is that byte again


@needs_bwrap
def test_stopping_pid_1_and_a_double_forked_daemon_leave_nothing_behind():
    # The code stops the sandbox's PID 1 (ptrace, then SIGSTOP) so that it cannot notice anything, and leaves a
    # daemon (setsid, double fork): the run still ends at the timeout and nothing of it outlives the run.
    marker = f"pid1-{uuid.uuid4().hex}"
    code = ("import ctypes, os, signal, sys, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print('ptrace', libc.ptrace(16, 1, 0, 0), flush=True)\n"  # PTRACE_ATTACH
            "os.kill(1, signal.SIGSTOP)\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])\n"
            "    os._exit(0)\n"
            "time.sleep(30)\n")
    watcher = Watcher(marker)
    watcher.start()
    start = time.monotonic()
    result = run_python(code, timeout_s=3)
    watcher.stop.set()
    watcher.join()
    assert result.timed_out and time.monotonic() - start < 3 + 5
    assert watcher.most == 1  # the daemon ran
    assert wait_gone(marker) == []


@needs_bwrap
def test_mountinfo_shows_no_host_folder_but_usr():
    result = run_python("print(open('/proc/self/mountinfo').read())", timeout_s=5)
    mounted = {line.split()[4] for line in result.stdout.strip().splitlines()}
    assert "/usr" in mounted and result.exit_code == 0
    for host in (str(REPO), "/work", "/root", "/home", "/etc", os.environ.get("HOME", "/root")):
        assert not any(m == host or m.startswith(host + "/") for m in mounted), (host, mounted)


@needs_bwrap
def test_threads_count_against_the_process_limit():
    code = ("import threading, time\nn = 0\ntry:\n    for _ in range(500):\n"
            "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n        n += 1\n"
            "except RuntimeError:\n    pass\nprint(n)\n")
    result = run_python(code, timeout_s=5, max_processes=10)
    assert result.exit_code == 0 and 1 <= int(result.stdout) < 10


@needs_bwrap
def test_cannot_reach_a_host_abstract_unix_socket():
    # Abstract sockets have no file to hide: only the network namespace keeps the code from the host's.
    name = f"\0slowthink-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen(1)
    server.settimeout(0.5)
    code = (f"import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({name!r}); print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n")
    try:
        result = run_python(code, timeout_s=5)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert result.stdout.startswith("refused"), result.stdout + result.stderr
