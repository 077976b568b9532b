"""The device-resident training split cuts the same batches as the loader path."""

import numpy as np
import pytest
import torch

from deepsynth.data.dataset import SegmentDataset, collate
from deepsynth.sim import keyboard
from deepsynth.train.data import to_device
from deepsynth.train.resident import ResidentSegments


def shown_states(frames: torch.Tensor, frame_index: torch.Tensor) -> np.ndarray:
    """Key states at every column: (B, Tv, 88)."""
    return keyboard.read_key_states(frames.numpy())[frame_index.numpy()]


@pytest.mark.parametrize("windows", [
    {"context": 40},
    {"context": 40, "video_context": 700, "lookahead": 15},
    {"context": 300, "video_context": 5000, "lookahead": 3},  # reaches before the song start
])
def test_resident_batches_equal_the_loader_batches(store, windows):
    ds = SegmentDataset(store, "train", **windows)
    resident = ResidentSegments(ds, "cpu")
    assert resident.nbytes > 0
    n = len(ds)
    for indices in ([0, 1, 2], [n - 1, 0, n // 2], [n // 3]):
        want = to_device(collate([ds[i] for i in indices]), torch.device("cpu"))
        got = resident.batch(indices)
        assert got.loss_start == want.loss_start
        assert torch.equal(got.audio, want.audio)
        assert got.frame_index.shape == want.frame_index.shape
        assert np.array_equal(shown_states(got.frames, got.frame_index),
                              shown_states(want.frames, want.frame_index))
        # one picture per distinct picture of each item, as collate has
        assert got.frames.shape[0] == sum(len(ds[i]["states"]) for i in indices)


def test_resident_without_video_has_audio_only(store):
    ds = SegmentDataset(store, "train", context=10)
    got = ResidentSegments(ds, "cpu", video=False).batch([0, 1])
    want = collate([ds[0], ds[1]])
    assert got.frames is None and got.frame_index is None
    assert torch.equal(got.audio, want["audio"])


@pytest.mark.gpu
def test_resident_batches_on_the_gpu_match_the_cpu(store):
    ds = SegmentDataset(store, "train", context=40, video_context=500, lookahead=15)
    cpu = ResidentSegments(ds, "cpu").batch([0, 2, 1])
    gpu = ResidentSegments(ds, "cuda").batch([0, 2, 1])
    assert torch.equal(gpu.audio.cpu(), cpu.audio)
    assert torch.equal(gpu.frame_index.cpu(), cpu.frame_index)
    assert torch.equal(gpu.frames.cpu(), cpu.frames)
