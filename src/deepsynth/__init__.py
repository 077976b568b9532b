"""DeepSynth: synthesize a piano's audio from a silent video of its keyboard."""

__version__ = "0.1.0"
