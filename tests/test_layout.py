"""The keyboard layout: the simulator's renders what it always did, reads back, round-trips
through a checkpoint, and a model built on another layout reads its keys."""

import dataclasses
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepsynth.checkpoint import load_checkpoint, read_payload, save_checkpoint
from deepsynth.config import KeyFeatureConfig, ModelConfig, StackConfig, from_dict, to_dict
from deepsynth.data.dataset import render_frames_torch
from deepsynth.layout import N_KEYS, KeyboardLayout
from deepsynth.model import DeepSynth, get_preset
from deepsynth.sim import keyboard

SHIPPED = Path(__file__).parents[1] / "src" / "deepsynth" / "checkpoints" / "small.pt"
# sha256 of sim.keyboard.render(checksum_states()) and of its key map, taken before the layout
# object existed (the geometry was drawn inside sim/keyboard.py then)
RENDER_SHA256 = "2c6076ba925617c49e42291a108ca3f889ec2ac371726d7b7922c257c828dc06"
KEY_MAP_SHA256 = "3fcfc3ae9a5732b561ac035c218b576ed0b4d5e774af4a03a1f70c3e9953e0b0"


def checksum_states() -> np.ndarray:
    rng = np.random.default_rng(15)
    states = np.zeros((5, N_KEYS), bool)
    states[1] = True
    states[2, ::2] = True
    states[3:] = rng.random((2, N_KEYS)) < 0.3
    return states


def other_layout() -> KeyboardLayout:
    """Black keys 7 px wide and 30 tall, other shades (pressed darker than rest for white keys,
    lighter for black ones)."""
    return keyboard.draw(black_key_width=7, black_key_height=30, white_up=230, white_down=140,
                         black_up=20, black_down=90, border=110)


def shifted(layout: KeyboardLayout, px: int) -> KeyboardLayout:
    """The same keyboard `px` pixels to the right (the columns on the left owned by no key)."""
    key_map = np.full_like(layout.key_map, -1)
    key_map[:, px:] = layout.key_map[:, :-px]
    return dataclasses.replace(layout, key_map=key_map)


def keys_model(layout: KeyboardLayout, learned_video: bool = False) -> DeepSynth:
    torch.manual_seed(0)
    stack = StackConfig(layers=2, residual_channels=8, skip_channels=8)
    cfg = ModelConfig(
        encoder=stack, decoder=stack, cond_channels=8, learned_video=learned_video,
        cnn=get_preset("tiny").model.cnn,
        keys=KeyFeatureConfig(enabled=True, window=64, taus_ms=(1.0,), harmonics=1, groups=2),
    )
    return DeepSynth(cfg, layout).eval()


def test_the_simulators_layout_renders_what_the_simulator_always_rendered():
    layout = keyboard.layout()
    frames = layout.render(checksum_states())
    assert frames.shape == (5, 57, 780) and frames.dtype == np.uint8
    assert hashlib.sha256(frames.tobytes()).hexdigest() == RENDER_SHA256
    assert hashlib.sha256(layout.key_map.tobytes()).hexdigest() == KEY_MAP_SHA256
    assert np.array_equal(keyboard.render(checksum_states()), frames)
    assert layout.shape == (keyboard.HEIGHT, keyboard.WIDTH) == (57, 780)
    assert layout.pitches.tolist() == list(range(21, 109))
    assert keyboard.layout() is layout  # drawn once


def test_fields_and_what_follows_from_them():
    layout = keyboard.layout()
    assert layout.key_map.dtype == np.int16 and layout.key_map.min() == -1
    assert layout.black.sum() == 36 and layout.black[1] and not layout.black[0]
    assert set(layout.rest_shade[layout.black]) == {keyboard.BLACK_UP}
    assert set(layout.pressed_shade[~layout.black]) == {keyboard.WHITE_DOWN}
    assert np.array_equal(layout.counts, layout.masks.sum(axis=(1, 2)))
    assert layout.counts.sum() == (layout.key_map >= 0).sum()
    assert np.all(layout.base[layout.key_map < 0] == keyboard.BORDER)
    assert np.array_equal(layout.render(np.ones(N_KEYS, bool)), layout.pressed)
    assert np.array_equal(layout.render(np.zeros(N_KEYS, bool)), layout.base)
    with pytest.raises(ValueError):  # read-only: a layout cannot change under a model
        layout.key_map[0, 0] = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.background = 0


@pytest.mark.parametrize("make", [keyboard.layout, other_layout,
                                  lambda: keyboard.draw(white_key_width=11, height=40)])
def test_read_key_states_and_levels_round_trip(make):
    layout = make()
    states = np.random.default_rng(2).random((40, N_KEYS)) < 0.3
    frames = layout.render(states)
    assert frames.shape == (40, *layout.shape)
    assert np.array_equal(layout.read_key_states(frames), states)
    assert np.array_equal(layout.read_key_states(frames[3]), states[3])
    assert np.array_equal(layout.key_levels(frames), states.astype(np.float32))
    # the torch renderer draws the same pictures from the same layout
    assert np.array_equal(render_frames_torch(torch.from_numpy(states), layout).numpy(), frames)
    with pytest.raises(ValueError, match="frames must be"):
        layout.read_key_states(np.zeros((2, layout.height + 1, layout.width), np.uint8))


def test_to_dict_holds_plain_values_and_survives_a_weights_only_load():
    layout = other_layout()
    data = layout.to_dict()
    plain = (int, bytes, list)
    assert all(isinstance(v, plain) for v in data.values())
    assert all(isinstance(x, int) for k in ("pitches", "rest_shade", "pressed_shade")
               for x in data[k])
    buf = io.BytesIO()
    torch.save({"layout": data}, buf)
    buf.seek(0)
    back = KeyboardLayout.from_dict(torch.load(buf, weights_only=True)["layout"])
    assert back == layout and hash(back) == hash(layout) and back is not layout
    assert np.array_equal(back.key_map, layout.key_map)
    assert np.array_equal(back.render(checksum_states()), layout.render(checksum_states()))
    assert back != keyboard.layout() and {back, layout, keyboard.layout()} == {layout,
                                                                             keyboard.layout()}
    with pytest.raises(ValueError, match="fields"):
        KeyboardLayout.from_dict({k: v for k, v in data.items() if k != "background"})
    with pytest.raises(ValueError, match="bytes"):
        KeyboardLayout.from_dict(data | {"key_map": data["key_map"][:-2]})


def test_validate_rejects_layouts_a_model_cannot_read():
    layout = keyboard.layout()
    no_pixels = layout.key_map.copy()
    no_pixels[no_pixels == 5] = 4
    with pytest.raises(ValueError, match=r"keys \[5\] own no pixel"):
        dataclasses.replace(layout, key_map=no_pixels)
    same = layout.pressed_shade.copy()
    same[7] = layout.rest_shade[7]
    with pytest.raises(ValueError, match=r"keys \[7\] look the same"):
        dataclasses.replace(layout, pressed_shade=same)
    with pytest.raises(ValueError, match="pitches must have shape"):
        dataclasses.replace(layout, pitches=layout.pitches[:87])
    with pytest.raises(ValueError, match="outside uint8"):
        dataclasses.replace(layout, rest_shade=layout.rest_shade.astype(int) + 300)
    with pytest.raises(ValueError, match="key_map values"):
        dataclasses.replace(layout, key_map=np.where(layout.key_map == 0, 88, layout.key_map))
    with pytest.raises(ValueError, match="background"):
        dataclasses.replace(layout, background=256)
    layout.validate()  # the simulator's is fine


def test_a_model_on_another_layout_reads_its_key_levels():
    layout = other_layout()
    model = keys_model(layout)
    assert model.layout is layout
    states = np.random.default_rng(3).random((30, N_KEYS)) < 0.4
    frames = torch.from_numpy(layout.render(states))
    levels = model.keys.key_levels(frames)
    assert torch.equal(levels, torch.from_numpy(states).float())  # 0 at rest, 1 pressed
    # the simulator's reading of these frames is wrong: the layouts differ where it matters
    sim_levels = keys_model(keyboard.layout()).keys.key_levels(frames)
    assert not torch.equal(sim_levels, levels)
    with pytest.raises(ValueError, match="frames"):
        model.keys.key_levels(torch.zeros(2, 57, 779, dtype=torch.uint8))
    # the pitches come from the layout: the oscillators' steps follow them
    higher = dataclasses.replace(layout, pitches=layout.pitches + 12)
    omega = 2 * np.pi * 440.0 * 2.0 ** ((higher.pitches - 69) / 12.0) / 4000
    steps = keys_model(higher).keys.omega[0].double()
    torch.testing.assert_close(steps, torch.from_numpy(omega * (omega < np.pi)))
    torch.testing.assert_close(steps[40], 2 * model.keys.omega[0, 40].double())  # an octave


def test_the_frame_cnn_takes_the_layouts_frame_size():
    layout = keyboard.draw(white_key_width=11, height=40)
    model = keys_model(layout, learned_video=True)
    states = np.random.default_rng(4).random((3, N_KEYS)) < 0.3
    frames = torch.from_numpy(layout.render(states))
    index = torch.tensor([[0] * 40 + [1] * 40 + [2] * 40])
    with torch.no_grad():
        logits = model(frames, index, torch.zeros(1, 120, dtype=torch.long))
    assert logits.shape == (1, 256, 120) and torch.isfinite(logits).all()


def test_a_conditioned_model_needs_a_layout_a_model_without_video_does_not():
    cfg = get_preset("tiny").model
    with pytest.raises(ValueError, match="needs its keyboard layout"):
        DeepSynth(cfg)
    assert DeepSynth(dataclasses.replace(cfg, no_video=True)).layout is None


def test_a_checkpoint_stores_and_restores_its_layout(tmp_path):
    layout = shifted(keyboard.layout(), 2)
    assert layout != keyboard.layout() and layout.shape == keyboard.layout().shape
    model = keys_model(layout, learned_video=True)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    assert loaded.layout == layout
    assert "frame_height" not in payload["config"]
    states = np.random.default_rng(5).random((4, N_KEYS)) < 0.3
    frames = torch.from_numpy(layout.render(states))
    assert torch.equal(loaded.keys.key_levels(frames), torch.from_numpy(states).float())
    index = torch.arange(4).repeat_interleave(30)[None]
    audio = torch.randint(0, 256, (1, 120), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(frames, index, audio), model(frames, index, audio))
    # sharded: the layout travels with the parts
    save_checkpoint(tmp_path / "s.pt", model, shard_mb=0.05)
    assert load_checkpoint(tmp_path / "s.pt")[0].layout == layout


def test_a_model_without_video_keeps_having_no_layout(tmp_path):
    cfg = dataclasses.replace(get_preset("tiny").model, no_video=True)
    save_checkpoint(tmp_path / "nv.pt", DeepSynth(cfg))
    assert read_payload(tmp_path / "nv.pt")["layout"] is None
    assert load_checkpoint(tmp_path / "nv.pt")[0].layout is None


def test_an_old_checkpoint_without_a_layout_loads_with_the_simulators(tmp_path):
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    save_checkpoint(tmp_path / "new.pt", model)
    payload = read_payload(tmp_path / "new.pt")
    del payload["layout"]  # as written before layouts were stored, with the frame size
    payload["config"] |= {"frame_height": 57, "frame_width": 780}
    del payload["checksum"]  # and before checksums
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.layout == keyboard.layout()
    # the shipped checkpoint (re-exported since) stores the simulator's layout
    assert load_checkpoint(SHIPPED)[0].layout == keyboard.layout()


def test_config_from_dict_drops_the_retired_frame_size_only():
    data = to_dict(ModelConfig())
    assert "frame_height" not in data
    old = data | {"frame_height": 57, "frame_width": 780}
    assert from_dict(ModelConfig, old) == ModelConfig()
    with pytest.raises(ValueError, match="unknown field 'frame_depth'"):
        from_dict(ModelConfig, data | {"frame_depth": 3})
    with pytest.raises(ValueError, match="unknown field 'frame_height'"):
        from_dict(StackConfig, to_dict(StackConfig()) | {"frame_height": 57})


def test_the_model_package_does_not_import_the_simulator():
    code = ("import sys, deepsynth.model, deepsynth.model.info, deepsynth.layout; "
            "print(sorted(m for m in sys.modules if m.startswith('deepsynth.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    src = Path(__file__).parents[1] / "src" / "deepsynth"
    for path in [*(src / "model").glob("*.py"), src / "layout.py"]:
        lines = path.read_text().splitlines()
        assert not [x for x in lines if x.lstrip().startswith(("import", "from"))
                    and ("deepsynth.sim" in x or "torch" in x and path.name == "layout.py")]
