"""numba's on-disk cache of compiled kernels, kept in step with every file a kernel inlines.

numba checks a cached kernel against its own function's source file only (a hash of it): a
kernel of `fused.py` that inlines the sampler (`samplers.py`) and the matrix products
(`simd.py`) went on loading the machine code of their old versions after either changed (seen:
a faster sampler measured no faster until the cache was deleted), and a user who upgrades
deepsynth could keep an old kernel the same way. `cached_njit` is `njit(cache=True)` whose
freshness stamp also covers the files it is told the kernel depends on; any change to one of
them compiles the kernel afresh (once) and replaces its cache entry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from numba import njit
from numba.core.caching import CompileResultCacheImpl, FunctionCache

_PACKAGE = Path(__file__).resolve().parents[1]
# the files the package's kernels inline, each kernel's own included (one stamp for all of them:
# a change to any compiles them all afresh, once)
KERNEL_SOURCES = tuple(_PACKAGE / f for f in ("samplers.py", "generate/simd.py",
                                              "generate/fused.py", "generate/keycond.py"))


@cache
def _digest(paths: tuple[Path, ...], stamps: tuple[tuple[float, int], ...]) -> str:
    """SHA-256 of the files' bytes (memoised on their mtimes and sizes, as numba's own is)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def sources_digest(paths: Sequence[str | os.PathLike]) -> str:
    paths = tuple(Path(p) for p in paths)
    stamps = tuple((s.st_mtime, s.st_size) for s in (p.stat() for p in paths))
    return _digest(paths, stamps)


def _cache_class(depends: tuple[Path, ...]) -> type[FunctionCache]:
    """numba's function cache, its locators' stamps extended with the digest of `depends`."""

    class Stamped:
        def get_source_stamp(self):
            return (super().get_source_stamp(), sources_digest(depends))

    class Impl(CompileResultCacheImpl):
        _locator_classes = [type(c.__name__, (Stamped, c), {})
                            for c in CompileResultCacheImpl._locator_classes]

    class Cache(FunctionCache):
        _impl_class = Impl

    return Cache


def cached_njit(depends: Sequence[str | os.PathLike] = KERNEL_SOURCES,
                **flags) -> Callable[[Callable], Callable]:
    """Like `numba.njit(cache=True, **flags)`, the cached machine code also tied to the bytes of
    the files in `depends` (the package's kernel sources by default)."""
    cls = _cache_class(tuple(Path(p).resolve() for p in depends))

    def wrap(fn: Callable) -> Callable:
        dispatcher = njit(**flags)(fn)
        dispatcher._cache = cls(dispatcher.py_func)  # what njit(cache=True) sets, stamped
        return dispatcher

    return wrap
