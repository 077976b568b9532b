"""Checkpoints rebuild the model from the file alone; bad files fail loudly, in one line."""

import os

import pytest
import torch

from deepsynth.checkpoint import load_checkpoint, save_checkpoint
from deepsynth.errors import DeepSynthError
from deepsynth.model import DeepSynth, get_preset
from deepsynth.sim import keyboard


def tiny_batch(model, B=2, T=200, N=3):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (N, *model.layout.shape), generator=g)
    index = torch.sort(torch.randint(0, N, (B, T), generator=g), dim=1).values
    return frames.to(torch.uint8), index, torch.randint(0, 256, (B, T), generator=g)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return DeepSynth(get_preset("tiny").model, keyboard.layout()).eval()


@pytest.fixture
def saved(tmp_path, model):
    path = tmp_path / "ckpt" / "model.pt"
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, index, audio = tiny_batch(model)
    torch.nn.functional.cross_entropy(model(frames, index, audio), audio).backward()
    opt.step()
    extra = {"preset": "tiny", "step": 1, "val_ce": 5.5}
    save_checkpoint(path, model, extra=extra, optimizer=opt.state_dict())
    return path


def test_round_trip_gives_identical_logits(saved, model):
    loaded, payload = load_checkpoint(saved)
    assert loaded.cfg == model.cfg and not loaded.training
    assert payload["extra"] == {"preset": "tiny", "step": 1, "val_ce": 5.5}
    batch = tiny_batch(model)
    with torch.no_grad():
        assert torch.equal(loaded(*batch), model(*batch))
    opt = torch.optim.Adam(loaded.parameters())
    opt.load_state_dict(payload["optimizer"])  # optimizer state survives too
    assert os.listdir(saved.parent) == ["model.pt"]  # no temporary file left behind


def test_payload_loads_with_weights_only(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload["config"]["decoder"]["layers"] == 3


def test_half_weights_for_shipping(tmp_path, model):
    path = tmp_path / "small.pt"
    save_checkpoint(path, model, half=True)
    payload = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in payload["model"].values() if v.is_floating_point())
    loaded, _ = load_checkpoint(path)
    assert next(loaded.parameters()).dtype == torch.float32
    batch = tiny_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch), model(*batch), atol=2e-2, rtol=1e-2)


def test_small_preset_ships_under_20_mb(tmp_path):
    path = tmp_path / "small.pt"
    save_checkpoint(path, DeepSynth(get_preset("small").model, keyboard.layout()), half=True)
    assert path.stat().st_size <= 20_000_000


def test_overwrite_replaces_the_file(saved, model):
    save_checkpoint(saved, model, extra={"step": 2})
    assert load_checkpoint(saved)[1]["extra"] == {"step": 2}


def one_line_error(path):
    with pytest.raises(DeepSynthError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "not found" in one_line_error(tmp_path / "nope.pt")


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(os.urandom(5000))
    one_line_error(path)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    one_line_error(saved)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    assert "not a DeepSynth checkpoint" in one_line_error(path)


def test_weights_that_do_not_fit_the_config(tmp_path, saved):
    payload = torch.load(saved, weights_only=True)
    payload["config"]["decoder"]["residual_channels"] = 16
    del payload["checksum"]  # as a file written before checksums (else: "corrupt")
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    assert "does not match" in one_line_error(path)


def test_reserved_state_names_are_refused(tmp_path, model):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.pt", model, config={})
