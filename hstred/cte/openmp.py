"""Check that arcticpy's compiled core was built with OpenMP.

Run as ``python -m hstred.cte.openmp`` (``make install`` does): exits non-zero
when the extension is not linked against an OpenMP runtime, which would make the
CTE correction run on one core.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

__all__ = ["arcticpy_has_openmp"]

_OPENMP_RUNTIMES = (b"libgomp", b"libomp", b"libiomp")


def arcticpy_has_openmp() -> bool:
    """True when arcticpy's wrapper extension links an OpenMP runtime."""
    spec = find_spec("arcticpy")
    if spec is None or spec.submodule_search_locations is None:
        return False
    for location in spec.submodule_search_locations:
        for lib in Path(location).glob("wrapper*.so"):
            blob = lib.read_bytes()
            if any(name in blob for name in _OPENMP_RUNTIMES):
                return True
    return False


def main() -> int:
    if arcticpy_has_openmp():
        print("arcticpy: OpenMP enabled")
        return 0
    print("arcticpy: built WITHOUT OpenMP; rebuild with CFLAGS/CXXFLAGS/LDFLAGS=-fopenmp "
          "(make install does this)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
