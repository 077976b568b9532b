"""The CUDA paths (skipped without a GPU): frames rendered on the device, bf16 autocast and
torch.compile on by default, an eager fp32 run, resume on the GPU."""

import pytest
import torch

from deepsynth.checkpoint import load_checkpoint
from deepsynth.data.dataset import SegmentDataset, collate
from deepsynth.train import RunOptions, train
from deepsynth.train.data import to_device
from deepsynth.train.logs import read_metrics

pytestmark = pytest.mark.gpu

RECIPE = {"window_seconds": 1.0, "overlap_seconds": 0.0, "val_segments": 6, "val_every": 3,
          "log_every": 1}



def test_frames_rendered_on_the_device_equal_the_loaders(store):
    with_frames = SegmentDataset(store, "train", context=8)
    states_only = SegmentDataset(store, "train", context=8, render_frames=False)
    batch = collate([with_frames[i] for i in range(3)])
    light = collate([states_only[i] for i in range(3)])
    assert "frames" not in light
    device = torch.device("cuda")
    a, b = to_device(batch, device), to_device(light, device)
    assert a.frames.device.type == b.frames.device.type == "cuda"
    assert torch.equal(a.frames, b.frames) and torch.equal(a.frame_index, b.frame_index)


def test_cuda_defaults_bf16_and_compile(store, tmp_path):
    out = tmp_path / "run"
    r = train(store, out, "tiny", RECIPE, RunOptions(max_steps=6, device="cuda", progress=False))
    assert r.config.precision == "bf16" and r.config.compile is True
    assert next(r.model.parameters()).device.type == "cuda"
    rows = read_metrics(out / "metrics.csv")
    assert [x["step"] for x in rows] == list(range(1, 7))
    assert all(x["train_ce"] > 0 and x["train_ce"] < 10 for x in rows)
    model, payload = load_checkpoint(out / "best.pt")  # loads on the CPU from a GPU run
    assert next(model.parameters()).device.type == "cpu"
    r2 = train(store, out, None, None, RunOptions(max_steps=9, device="cuda", resume="always",
                                                  progress=False))
    assert r2.step == 9


def test_cuda_eager_fp32_and_no_video(store, tmp_path):
    r = train(store, tmp_path / "a", "tiny", dict(RECIPE, precision="fp32", compile=False),
              RunOptions(max_steps=3, device="cuda", progress=False, tensorboard=False))
    assert r.config.precision == "fp32" and not r.config.compile
    r = train(store, tmp_path / "b", "tiny", dict(RECIPE, no_video=True),
              RunOptions(max_steps=3, device="cuda", progress=False, tensorboard=False))
    assert r.model.cfg.no_video and r.step == 3
