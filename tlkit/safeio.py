"""Safe reading of downloaded files: numpy-only unpickling, archive extraction that cannot escape, checksums.

Kept so that old imports keep working; the code lives in the private tlkit._support.safeio.
"""

from tlkit._support.safeio import (
    MAX_EXTRACT_BYTES,
    NumpyUnpickler,
    UnsafeArchiveError,
    UnsafePickleError,
    load_pickled_arrays,
    move_dir_into_place,
    restricted_load,
    restricted_loads,
    safe_extract,
    sha256_file,
)

__all__ = ["MAX_EXTRACT_BYTES", "NumpyUnpickler", "UnsafeArchiveError", "UnsafePickleError", "load_pickled_arrays",
           "move_dir_into_place", "restricted_load", "restricted_loads", "safe_extract", "sha256_file"]
