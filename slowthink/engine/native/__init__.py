"""C++ kernels for the engine, compiled on first use by torch's cpp_extension (a C++ compiler and ninja).

``decode_kernels()`` returns the compiled module or None, in which case the engine runs its plain-torch
path: set ``SLOWTHINK_NATIVE=0`` to ask for that, and a failed build warns once and falls back. The
build is cached per machine under torch's extension folder (``TORCH_EXTENSIONS_DIR``), one per version of
``decode.cpp``, so only the first process of each version pays the ~1 minute compile.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

NAME = "slowthink_decode"
STALE_LOCK_S = 300  # a build takes ~1 minute (a few on a loaded machine); an older lock was left by a killed build


def wait_for_build_lock(lock: Path, stale_s: float = STALE_LOCK_S, poll_s: float = 1.0) -> None:
    """Wait while another process builds (its lock file exists), saying so once; remove a lock older than
    ``stale_s``. torch itself waits forever on the lock of a build that was killed midway (Ctrl-C or a kill
    during the first use), silently, so a later command would hang."""
    told = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_s:
            lock.unlink(missing_ok=True)
            print(f"slowthink: removed {lock}, left by a C++ build that did not finish", file=sys.stderr, flush=True)
            return
        if not told:
            print(f"slowthink: waiting for the C++ decode build another process started (lock {lock}; treated as "
                  f"abandoned once {stale_s:.0f} s old)", file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_s)


@functools.cache
def decode_kernels():
    if os.environ.get("SLOWTHINK_NATIVE", "1") == "0":
        return None
    try:
        import torch
        from torch.utils.cpp_extension import _get_build_directory, load

        # One build per source content and torch install, from a copy of the source at a fixed path: two
        # checkouts or virtualenvs on one machine would otherwise rebuild over each other, since ninja sees
        # the source path or torch's include path change.
        code = Path(__file__).with_name("decode.cpp").read_bytes()
        name = f"{NAME}_{hashlib.sha256(code + torch.__file__.encode()).hexdigest()[:12]}"
        build = Path(_get_build_directory(name, False))
        source = build.parent / f"{name}.cpp"
        if not source.exists() or source.read_bytes() != code:
            tmp = source.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(code)
            os.replace(tmp, source)  # atomic: a concurrent first use never reads half a file
        wait_for_build_lock(build / "lock")
        if not (build / f"{name}.so").exists():
            print(f"slowthink: building the C++ decode step in {build} (once per machine, about a minute)",
                  file=sys.stderr, flush=True)
        # -fopenmp: at::parallel_for is OpenMP in headers; the module then links libgomp.so.1, which
        # resolves to the copy torch already loaded, so torch.set_num_threads governs it too.
        return load(name=name, sources=[str(source)], extra_cflags=["-O3", "-march=native", "-fopenmp"],
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: the torch path still works
        warnings.warn(f"slowthink: C++ decode kernels unavailable ({type(e).__name__}: {e}); "
                      "using the plain-torch decode path", stacklevel=2)
        return None
