"""DeepSynth: synthesize a piano's audio from a silent video of its keyboard.

From Python (the shipped model by default; a checkpoint file or a training run's folder):

    import deepsynth
    synth = deepsynth.load()                        # or deepsynth.load("runs/small")
    audio = synth.synthesize("song.mp4")            # int16 numpy audio at synth.sample_rate
    audio = synth.synthesize("song.mid", start=2.0, duration=5.0, temperature=0.8, seed=1)
    sim = deepsynth.simulate("song.mid", sample_rate=synth.sample_rate)
    audio = synth.synthesize((sim.states, sim.times))       # key states + their times (s)
    audio = synth.synthesize((sim.frames(), sim.times))     # frames (N, 57, 780) uint8 + times

load, simulate, Synth and Simulated are documented in deepsynth.api; `deepsynth --help` lists
the command-line tools. Importing this package is cheap: torch loads on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: it would triple the cost of the import
__version__ = "0.1.0"
__all__ = ["Simulated", "Synth", "load", "simulate", "__version__"]
_API = ("Simulated", "Synth", "load", "simulate")

if TYPE_CHECKING:
    from typing import Any

    from deepsynth.api import Simulated, Synth, load, simulate


def __getattr__(name: str) -> Any:
    if name in _API:  # imported on first use, so `import deepsynth` loads no numpy or torch
        from deepsynth import api

        return getattr(api, name)
    raise AttributeError(f"module 'deepsynth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
