"""C++ kernels for the engine, compiled on first use by torch's cpp_extension (a C++ compiler and ninja).

``decode_kernels()`` returns the compiled module or None, in which case the engine runs its plain-torch
path: set ``SLOWTHINK_NATIVE=0`` to ask for that, and a failed build warns once and falls back. The
build is cached per machine under torch's extension folder (``TORCH_EXTENSIONS_DIR``), so only the first
process pays the ~1 minute compile.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path


@functools.cache
def decode_kernels():
    if os.environ.get("SLOWTHINK_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        # -fopenmp: at::parallel_for is OpenMP in headers; the module then links libgomp.so.1, which
        # resolves to the copy torch already loaded, so torch.set_num_threads governs it too.
        return load(name="slowthink_decode", sources=[str(Path(__file__).with_name("decode.cpp"))],
                    extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: the torch path still works
        warnings.warn(f"slowthink: C++ decode kernels unavailable ({type(e).__name__}: {e}); "
                      "using the plain-torch decode path", stacklevel=2)
        return None
