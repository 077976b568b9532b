"""The piano simulator: MIDI -> key states -> keyboard frames (video) + SoundFont audio.

numpy, mido/pretty_midi, tinysoundfont and PyAV only: no torch in this layer.
"""
