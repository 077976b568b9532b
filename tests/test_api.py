"""The Python API (deepsynth.load / Synth.synthesize / deepsynth.simulate) and what generation
promises a caller: its model untouched, an input's audio independent of the batch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from midi_factory import TPB, make_midi, save

import deepsynth
from deepsynth.checkpoint import save_checkpoint
from deepsynth.errors import DeepSynthError
from deepsynth.generate.generator import Window, generate, score_incremental
from deepsynth.generate.sources import VideoSource
from deepsynth.model.deepsynth import DeepSynth
from deepsynth.model.presets import get_preset
from deepsynth.sim import keyboard


@pytest.fixture(scope="module")
def synth():
    return deepsynth.load()  # the shipped model


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    notes = [(60, 90, 0, TPB), (64, 80, TPB // 2, 2 * TPB), (67, 100, 2 * TPB, 3 * TPB)]
    return save(make_midi(notes), tmp_path_factory.mktemp("song") / "song.mid")  # 1.5 s + 1 s


@pytest.fixture(scope="module")
def sim(song, synth):
    return deepsynth.simulate(song, sample_rate=synth.sample_rate)


def test_import_is_cheap_and_help_shows_the_api():
    code = ("import sys, deepsynth; print(sorted(m for m in ('numpy', 'torch', 'deepsynth.api') "
            "if m in sys.modules)); help(deepsynth)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    first, _, doc = r.stdout.partition("\n")
    assert first == "[]"  # nothing heavy is imported by `import deepsynth`
    for name in ("load(checkpoint", "simulate(midi", "class Synth", "synthesize(self, source"):
        assert name in doc


def test_load_and_synthesize_a_midi_file(synth, song):
    assert synth.sample_rate == 4000 and synth.checkpoint.name == "small.pt"
    # the shipped checkpoint's recommended sampling, measured in docs/quality.md
    assert synth.temperature == 0.6 and synth.floor == 0.005
    assert not np.array_equal(synth.synthesize(song, duration=0.5),
                              synth.synthesize(song, duration=0.5, floor=0.0))
    a = synth.synthesize(song, duration=0.5)
    assert a.dtype == np.int16 and a.shape == (2000,) and a.std() > 0
    assert np.array_equal(a, synth.synthesize(song, duration=0.5, seed=0))
    assert not np.array_equal(a, synth.synthesize(song, duration=0.5, seed=1))
    whole = synth.synthesize(song, temperature=0)
    assert len(whole) == 10000  # to the end: 2.5 s
    late = synth.synthesize(song, start=2.0)
    assert len(late) == 2000


def test_every_kind_of_input_gives_the_same_audio(synth, song, sim, tmp_path):
    assert sim.states.shape == (len(sim.times), 88) and sim.states.dtype == bool
    assert sim.audio.dtype == np.int16 and len(sim.audio) == 10000 and sim.seconds == 2.5
    assert np.array_equal(sim.starts, np.round(sim.times * 4000))
    frames = sim.frames()
    assert frames.shape == (len(sim.times), 57, 780) and frames.dtype == np.uint8
    kw = dict(start=0.25, duration=1.0, seed=3, temperature=1.0)
    ref = synth.synthesize(song, **kw)
    assert np.array_equal(ref, synth.synthesize(sim, **kw))
    assert np.array_equal(ref, synth.synthesize((sim.states, sim.times), **kw))
    assert np.array_equal(ref, synth.synthesize((frames, sim.times), **kw))
    assert np.array_equal(ref, synth.synthesize(str(song), **kw))


def test_arrays_start_from_the_empty_keyboard_and_last_as_asked(synth):
    states = np.zeros((2, 88), bool)
    states[0, 39] = True  # middle C from 0.5 s to 1 s
    explicit = np.concatenate([np.zeros((1, 88), bool), states])
    kw = dict(duration=2.0, temperature=1.0, seed=2)
    late = synth.synthesize((states, np.array([0.5, 1.0])), **kw)
    assert np.array_equal(late, synth.synthesize((explicit, np.array([0.0, 0.5, 1.0])), **kw))
    assert len(late) == 8000
    assert len(synth.synthesize((states, np.array([0.5, 1.0])))) == 8000  # 1 s past the last
    assert len(synth.synthesize((states, np.array([0.5, 1.0])), duration=3.0)) == 12000


@pytest.mark.parametrize(
    ("source", "match"),
    [((np.zeros((2, 88), bool), np.array([1.0, 0.5])), "non-decreasing"),
     ((np.zeros((2, 88), bool), np.array([0.0])), "shape"),
     ((np.zeros((2, 57, 700), np.uint8), np.array([0.0, 1.0])), "57, 780"),
     ((np.zeros((2, 88), np.float32), np.array([0.0, 1.0])), "bool"),
     (42, "source must be"),
     ("nope.mid", "no such file")],
)
def test_bad_input_is_one_clear_error(synth, source, match):
    with pytest.raises(DeepSynthError, match=match):
        synth.synthesize(source)


def test_bad_arguments(synth, song, tmp_path):
    with pytest.raises(DeepSynthError, match="past its end"):
        synth.synthesize(song, start=10.0)
    with pytest.raises(DeepSynthError, match="temperature"):
        synth.synthesize(song, temperature=-1)
    with pytest.raises(DeepSynthError, match="without best.pt"):
        deepsynth.load(tmp_path)
    with pytest.raises(DeepSynthError, match="device"):
        deepsynth.load(device="tpu")


def test_load_a_run_folder_or_a_file(tmp_path, song):
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    save_checkpoint(tmp_path / "run" / "best.pt", model, extra={"temperature": 0.5})
    from_run = deepsynth.load(tmp_path / "run")
    from_file = deepsynth.load(str(tmp_path / "run" / "best.pt"))
    assert from_run.checkpoint == tmp_path / "run" / "best.pt" and from_run.temperature == 0.5
    assert np.array_equal(from_run.synthesize(song, duration=0.2),
                          from_file.synthesize(song, duration=0.2))


def _video(n_frames: int, n_samples: int, seed: int) -> VideoSource:
    rng = np.random.default_rng(seed)
    states = rng.random((n_frames, 88)) < 0.1
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, n_samples), n_frames - 1, replace=False))]
    return VideoSource(None, "test", starts.astype(np.int64), n_samples, 4000,
                       lambda: iter([keyboard.render(states)]))


def test_generation_leaves_the_callers_model_as_it_was():
    torch.manual_seed(0)
    m = DeepSynth(get_preset("tiny").model, keyboard.layout()).double().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    src = _video(5, 1500, 0)
    got = generate(m, [src], seed=4)[0]
    assert m.training and all(p.dtype == torch.float64 for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    ready = DeepSynth(get_preset("tiny").model, keyboard.layout())
    ready.load_state_dict(before)
    ready.eval()
    assert np.array_equal(got, generate(ready, [src], seed=4)[0])  # as if converted first
    frames = torch.from_numpy(keyboard.render(np.zeros((1, 88), bool)))
    index = torch.zeros(1, 300 + m.lookahead, dtype=torch.long)
    score_incremental(m, frames, index, torch.zeros(1, 300, dtype=torch.long))
    assert m.training and next(m.parameters()).dtype == torch.float64
    synth = deepsynth.Synth(m)
    assert len(synth.synthesize((np.zeros((1, 88), bool), np.zeros(1)), duration=0.1)) == 400
    assert m.training and next(m.parameters()).dtype == torch.float64


def test_an_inputs_audio_does_not_depend_on_the_batch(synth):
    a, b, c = _video(6, 3000, 0), _video(9, 2500, 1), _video(7, 3500, 2)
    for m in (synth.model, DeepSynth(get_preset("tiny").model, keyboard.layout()).eval()):
        alone = generate(m, [b], seed=7)[0]
        batch = generate(m, [a, b, c], seed=7)
        assert np.array_equal(alone, batch[1]) and len(batch[1]) == 2500
        assert np.array_equal(generate(m, [c], [Window(100, 2000)], seed=7)[0],
                              generate(m, [a, c], [Window(0, 10), Window(100, 2000)], seed=7)[1])
        # one seed per input: each as if alone with its own seed
        seeded = generate(m, [a, b], seed=[3, 7])
        assert np.array_equal(seeded[1], alone)
        assert np.array_equal(seeded[0], generate(m, [a], seed=3)[0])
    with pytest.raises(ValueError, match="seeds"):
        generate(synth.model, [a, b], seed=[1])
