"""The DeepSynth network (torch only: knows no files and no MIDI)."""

from deepsynth.model.deepsynth import DeepSynth, GenerationState, shift_right, silence_class
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN, hold
from deepsynth.model.layers import CausalConv1d, ConvState, GatedResidualBlock, ResidualStack
from deepsynth.model.presets import PRESETS, Preset, get_preset
from deepsynth.model.wavenet import WaveNetDecoder

__all__ = [
    "PRESETS",
    "CausalConv1d",
    "ConvState",
    "DeepSynth",
    "FrameCNN",
    "GatedResidualBlock",
    "GenerationState",
    "Preset",
    "ResidualStack",
    "VideoEncoder",
    "WaveNetDecoder",
    "get_preset",
    "hold",
    "shift_right",
    "silence_class",
]
