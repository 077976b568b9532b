"""The compiled kernels' on-disk cache follows the files they inline, not only their own: a
kernel whose sampler or matrix product changed is compiled afresh (numba's own cache checks the
kernel's file alone and would load the old machine code)."""

import subprocess
import sys
import textwrap

from deepsynth.generate import fused, keycond
from deepsynth.generate.jitcache import KERNEL_SOURCES, sources_digest

KERNEL = """
from numba import njit
from deepsynth.generate.jitcache import cached_njit
import dep
step = njit(inline="always")(dep.step)

@cached_njit(depends=[dep.__file__])
def kernel(x):
    return step(x)

print(kernel(1), kernel.stats.cache_hits.get(kernel.signatures[0], 0))
"""


def _run(folder):
    out = subprocess.run([sys.executable, "kern.py"], cwd=folder, capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_a_kernel_is_compiled_again_when_a_file_it_inlines_changes(tmp_path):
    (tmp_path / "kern.py").write_text(KERNEL)
    (tmp_path / "dep.py").write_text("def step(x):\n    return x + 1\n")
    assert _run(tmp_path) == (2, 0)  # compiled, saved
    assert _run(tmp_path) == (2, 1)  # loaded from the cache
    (tmp_path / "dep.py").write_text(textwrap.dedent("""\
        def step(x):
            return x + 2
        """))
    assert _run(tmp_path) == (3, 0)  # the dependency changed: compiled again
    assert _run(tmp_path) == (3, 1)


def test_the_packages_kernels_follow_their_sampler_and_products():
    names = {p.name for p in KERNEL_SOURCES}
    assert {"samplers.py", "simd.py", "fused.py", "keycond.py"} <= names
    assert all(p.is_file() for p in KERNEL_SOURCES)
    for kernel in (fused._run_group, fused._run_groups, fused._sample, keycond._condition):
        stamp = kernel._cache._impl.locator.get_source_stamp()
        assert stamp[1] == sources_digest(KERNEL_SOURCES)  # after numba's own
