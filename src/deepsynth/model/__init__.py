"""The DeepSynth network (torch only: knows no files and no MIDI)."""

from deepsynth.model.conditioning import ConditioningPath, LearnedVideo
from deepsynth.model.deepsynth import DeepSynth, shift_right
from deepsynth.model.encoder import VideoEncoder
from deepsynth.model.frame_cnn import FrameCNN, hold
from deepsynth.model.layers import CausalConv1d, GatedResidualBlock, ResidualStack
from deepsynth.model.output import OUTPUTS, MuLawSoftmax, OutputDistribution, output_distribution
from deepsynth.model.presets import PRESETS, Preset, get_preset
from deepsynth.model.wavenet import WaveNetDecoder

__all__ = [
    "PRESETS",
    "CausalConv1d",
    "DeepSynth",
    "FrameCNN",
    "GatedResidualBlock",
    "ConditioningPath",
    "LearnedVideo",
    "MuLawSoftmax",
    "OUTPUTS",
    "OutputDistribution",
    "Preset",
    "ResidualStack",
    "VideoEncoder",
    "WaveNetDecoder",
    "get_preset",
    "hold",
    "shift_right",
    "output_distribution",
]
