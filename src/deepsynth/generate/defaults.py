"""Generation's limits and live play's defaults, in a module without torch, so that building
the command line (every `deepsynth` command) does not import the generator to show them."""

MAX_FLOOR = 0.1  # the largest sampling floor: a probability well below one class's share
POSTFILTER_GAIN = 0.2  # the harmonic post-filter's gain away from the notes (1: off; postfilter.py)

DEFAULT_BLOCK = 4  # samples per block: 1 ms at 4 kHz (event to sound: block + lookahead + compute)
DEFAULT_HORIZON = 256  # samples of conditioning computed ahead per call
DEFAULT_MAX_LATENCY_MS = 10.0  # the output stream's delay: a block ready later is an underrun
