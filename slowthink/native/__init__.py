"""C++ kernels for the engine, compiled on first use by torch's cpp_extension (a C++ compiler and ninja).

``decode_kernels()`` returns the compiled module or None, in which case the engine runs its plain-torch
path: set ``SLOWTHINK_NATIVE=0`` to ask for that, and a failed build warns once and falls back. The
build is cached per machine under torch's extension folder (``TORCH_EXTENSIONS_DIR``), so only the first
process pays the ~1 minute compile.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from pathlib import Path

NAME = "slowthink_decode"
STALE_LOCK_S = 600  # a build takes ~1 minute; a lock older than this was left by a killed build


@functools.cache
def decode_kernels():
    if os.environ.get("SLOWTHINK_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        # torch waits forever on the lock file of a build that was killed midway (Ctrl-C on the first use).
        build = Path(_get_build_directory(NAME, False))
        lock = build / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)
        if not (build / f"{NAME}.so").exists():
            print(f"slowthink: building the C++ decode step in {build} (once per machine, about a minute)",
                  file=sys.stderr, flush=True)
        # -fopenmp: at::parallel_for is OpenMP in headers; the module then links libgomp.so.1, which
        # resolves to the copy torch already loaded, so torch.set_num_threads governs it too.
        return load(name=NAME, sources=[str(Path(__file__).with_name("decode.cpp"))],
                    extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: the torch path still works
        warnings.warn(f"slowthink: C++ decode kernels unavailable ({type(e).__name__}: {e}); "
                      "using the plain-torch decode path", stacklevel=2)
        return None
