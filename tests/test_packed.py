"""Generation from a packed model (generate/packed.py): the same audio as the torch model's,
sample for sample; the pack's file round trip and its cache (missing, damaged, stale or
another checkpoint's: not used); `synthesize` on the CPU without importing torch once the
shipped model is packed."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from midi_factory import TPB, make_midi, save

from deepsynth.api import array_source, checkpoint_path, open_input
from deepsynth.audio import read_wav
from deepsynth.checkpoint import load_checkpoint
from deepsynth.generate import packed
from deepsynth.generate.generator import Window, generate
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


@pytest.fixture(scope="module")
def shipped():
    path = checkpoint_path(None)
    model, payload = load_checkpoint(path)
    return model, payload, path


@pytest.fixture(scope="module")
def pack(shipped):
    model, payload, path = shipped
    return packed.pack_model(model, packed.file_sha256(path), payload.get("extra"))


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    notes = [(60, 90, 0, TPB), (64, 80, TPB // 2, 2 * TPB), (67, 100, 2 * TPB, 4 * TPB),
             (48, 70, 3 * TPB, 5 * TPB), (60, 90, 5 * TPB, 6 * TPB)]
    return save(make_midi(notes), tmp_path_factory.mktemp("song") / "song.mid")


def test_packed_generation_equals_the_torch_model(shipped, pack, song):
    """A batch of two windows (one not at the piece's start), two seeds, raw and post-filtered,
    chunked: every sample equal."""
    model = shipped[0]
    src = open_input(song, pack.sample_rate)
    windows = [Window(0, 6000), Window(2500, 4000)]
    for gain, chunk in ((1.0, None), (0.2, 700)):
        want = generate(model, [src, src], windows, 0.6, [3, 4], chunk=chunk, floor=0.005,
                        postfilter=gain)
        got = packed.generate_packed(pack, [src, src], windows, 0.6, [3, 4], chunk=chunk,
                                     floor=0.005, postfilter=gain)
        for w, a, b in zip(windows, want, got, strict=True):
            assert len(a) == w.length and np.array_equal(a, b)
            assert np.abs(b.astype(np.int64)).max() > 0  # it plays something
    with pytest.raises(Exception, match="temperature"):  # the same checks as generate's
        packed.generate_packed(pack, [src], [windows[0]], -1.0)


def test_packed_key_levels_equal_the_torch_ones(shipped, pack):
    """Rendered keyboards and arbitrary pictures of its size: the same float32 levels."""
    path = next(iter(shipped[0].paths.values()))
    rng = np.random.default_rng(0)
    states = rng.random((20, 88)) < 0.2
    frames = np.concatenate([keyboard.layout().render(states),
                             rng.integers(0, 256, (5, *pack.layout.shape), dtype=np.uint8)])
    want = path.key_levels(torch.from_numpy(frames)).numpy()
    got = pack.key_levels(frames)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert 0 < got.mean() < 1
    with pytest.raises(ValueError, match="frames"):
        pack.key_levels(frames[:, :10])


def test_pack_file_round_trip(pack, tmp_path):
    f = tmp_path / "p.npz"
    packed.save(pack, f)
    back = packed.load(f, pack.checkpoint_sha256)
    for name in ("checkpoint_sha256", "sample_rate", "lookahead", "context", "hop", "output",
                 "silence", "n_uniforms", "extra"):
        assert getattr(back, name) == getattr(pack, name)
    assert back.layout.to_dict() == pack.layout.to_dict()
    for record in ("decoder", "keys"):
        a, b = getattr(pack, record), getattr(back, record)
        for k, v in vars(a).items():
            w = getattr(b, k)
            assert (np.array_equal(v, w) and v.dtype == w.dtype) if isinstance(v, np.ndarray) \
                else v == w, (record, k)
    assert np.array_equal(back.levels, pack.levels) and back.preemphasis == pack.preemphasis
    assert back.extra.get("temperature") == 0.6  # the shipped model's recommendation
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left


def test_cache_ignores_missing_damaged_stale_and_foreign_packs(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSYNTH_CACHE", str(tmp_path / "cache"))
    model, payload, path = shipped
    mine = tmp_path / "model.pt"
    mine.write_bytes(path.read_bytes())
    assert packed.cached(mine) is None  # nothing packed yet
    assert packed.cached(tmp_path / "missing.pt") is None  # loading it will say why
    made = packed.store(model, mine, payload.get("extra"))
    assert made is not None and packed.cached(mine).checkpoint_sha256 == made.checkpoint_sha256
    target = packed.cache_file(made.checkpoint_sha256)
    good = target.read_bytes()
    for damage in (good[:1000], b""):  # cut short; empty (a crash before the data was there)
        target.write_bytes(damage)
        assert packed.cached(mine) is None
    arrays = dict(np.load(io.BytesIO(good)))
    for meta in ("[1]", json.dumps({**json.loads(str(arrays["meta"])), "code": "older"})):
        with target.open("wb") as f:  # not a record; packed by other code
            np.savez(f, **{**arrays, "meta": np.array(meta)})
        assert packed.cached(mine) is None
    with target.open("wb") as f:  # arrays that do not fit together
        np.savez(f, **{**arrays, "decoder.conv_b": arrays["decoder.conv_b"][:, :8]})
    assert packed.cached(mine) is None
    target.write_bytes(good)
    assert packed.cached(mine) is not None
    packed.store(model, mine, payload.get("extra"))
    other = tmp_path / "other.pt"  # another checkpoint's pack under this one's name
    other.write_bytes(path.read_bytes() + b"\0")
    os.replace(target, packed.cache_file(packed.file_sha256(other)))
    assert packed.cached(other) is None  # it records the checkpoint it came from
    with mine.open("ab") as f:  # a changed checkpoint has another name in the cache
        f.write(b"\0")
    assert packed.cached(mine) is None
    tiny = DeepSynth(get_preset("tiny").model, keyboard.layout())  # a learned video path
    assert not packed.packable(tiny)
    assert packed.store(tiny, mine) is None
    # a file replaced while it was loaded: its hash from before no longer holds, nothing stored
    fresh = tmp_path / "fresh.pt"
    fresh.write_bytes(path.read_bytes())
    before = packed.file_sha256(fresh)
    with fresh.open("ab") as f:
        f.write(b"\0\0")
    assert packed.store(model, fresh, payload.get("extra"), before) is None
    assert packed.cached(fresh) is None


def test_synthesize_without_torch_once_packed(song, tmp_path):
    """The first `synthesize` (torch) packs the shipped model; the next one generates from the
    pack without importing torch, the same wav bytes."""
    env = dict(os.environ, DEEPSYNTH_CACHE=str(tmp_path / "cache"))
    probe = ("import sys, runpy; sys.argv = ['deepsynth', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('deepsynth', run_name='__main__')\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             "print('TORCH', 'torch' in sys.modules)")
    outs = []
    for i in range(2):
        out = tmp_path / f"{i}.wav"
        r = subprocess.run([sys.executable, "-c", probe, "synthesize", str(song), "-o",
                            str(out), "--duration", "1.5", "--seed", "2"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append((out, r.stdout))
    assert "TORCH True" in outs[0][1] and "TORCH False" in outs[1][1]
    assert outs[0][0].read_bytes() == outs[1][0].read_bytes()
    assert len(read_wav(outs[1][0])[0]) == 6000
    assert len(list((tmp_path / "cache" / "packed").glob("*.npz"))) == 1


def test_key_state_arrays_generate_alike(shipped, pack):
    """An array source (key states with their times, the API's input): the same audio."""
    rng = np.random.default_rng(1)
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, 4000), 12, replace=False))]
    states = rng.random((len(starts), 88)) < 0.05
    src = array_source(states, starts, pack.sample_rate, keyboard.layout(), 4000)
    a = generate(shipped[0], [src], None, 0.8, 5, floor=0.005)[0]
    b = packed.generate_packed(pack, [src], None, 0.8, 5, floor=0.005)[0]
    assert np.array_equal(a, b)


def test_api_load_is_packed_once_cached_and_gives_the_same_audio(song, tmp_path, monkeypatch):
    """`deepsynth.load()` on the CPU: backed by the pack once there is one (synthesize without
    the torch model), the same audio as a Synth of the torch model; `model` loads on demand."""
    import deepsynth
    from deepsynth.api import Synth

    monkeypatch.setenv("DEEPSYNTH_CACHE", str(tmp_path / "cache"))
    first = deepsynth.load()  # nothing cached: the torch model, its pack written
    assert first.packed is None and first._model is not None
    second = deepsynth.load()
    assert second.packed is not None and second._model is None
    assert second.sample_rate == first.sample_rate and repr(second) == repr(first)
    want = first.synthesize(song, duration=1.0, seed=7)
    got = second.synthesize(song, duration=1.0, seed=7)
    assert len(got) == 4000 and np.array_equal(got, want)
    assert second._model is None  # synthesize did not need it
    keys = (np.eye(88, dtype=bool)[[40, 44]], np.array([0.0, 0.5]))
    assert np.array_equal(second.synthesize(keys, duration=1.0),
                          first.synthesize(keys, duration=1.0))
    assert second.model.cfg == first.model.cfg  # loaded on first use
    with pytest.raises(ValueError, match="packed model"):
        Synth(None)
