"""The key reader: it finds the keyboard in pictures the project did not draw exactly, recovers
the simulator's own layout exactly, reads camera-mode videos of several seeds, sizes and frame
rates, and refuses pictures without a keyboard with one clear error."""

import json
import subprocess
import sys

import numpy as np
import pytest
from midi_factory import TPB, make_midi, random_midi, save

from deepsynth import reader
from deepsynth.errors import DeepSynthError
from deepsynth.sim import keyboard
from deepsynth.sim.camera import (
    Camera,
    CameraConfig,
    camera_reading,
    camera_schedule,
    random_camera,
)
from deepsynth.sim.keystates import KeyChanges
from deepsynth.sim.simulate import read_piece
from deepsynth.sim.video import read_keys, write_camera_video, write_video

SR = 4000


def every_key_states(n: int = 240, seed: int = 0) -> np.ndarray:
    """Random key states in which every key is pressed at least once and released again."""
    rng = np.random.default_rng(seed)
    states = rng.random((n, 88)) < 0.07
    states[2 * np.arange(88) % n, np.arange(88)] = True
    states[(2 * np.arange(88) + 1) % n, np.arange(88)] = False
    return states


def read_frames(frames: np.ndarray) -> tuple[reader.Calibration, np.ndarray]:
    cal = reader.calibrate(reader.rest_pictures(frames))
    values = cal.values(frames)
    cal.fit_shades(values)
    return cal, cal.states_of(values)


def test_calibration_recovers_the_simulators_layout_exactly():
    states = every_key_states()
    lay = keyboard.layout()
    cal, got = read_frames(lay.render(states))
    assert np.array_equal(got, states)
    assert cal.layout() == lay  # key map, shades, pitches, background: all of it
    np.testing.assert_allclose(cal.to_frame, np.eye(3), atol=0.01)


def test_another_drawing_of_the_keyboard_is_read_and_its_layout_found():
    # the example: 7-pixel black keys and other shades, at the simulator's size
    lay = keyboard.draw(black_key_width=7, white_up=230, white_down=150, black_up=30,
                        black_down=120, border=90)
    states = every_key_states(seed=1)
    frames = lay.render(states)
    assert not np.array_equal(keyboard.layout().read_key_states(frames), states)  # old way
    cal, got = read_frames(frames)
    assert np.array_equal(got, states)
    assert cal.layout() == lay


@pytest.mark.parametrize("seed,size", [(0, (640, 96)), (1, (426, 40)), (2, (854, 120)),
                                       (3, (1280, 180)), (4, (640, 96)), (5, (1920, 1080))])
def test_camera_frames_of_several_seeds_and_sizes_read_right(seed, size):
    cam = Camera(random_camera(seed, size))
    states = every_key_states(120 if size[0] < 1920 else 96, seed)
    frames = cam.render(states, np.arange(len(states)))
    assert frames.shape == (len(states), size[1], size[0])
    _, got = read_frames(frames)
    assert np.array_equal(got, states)


def song_changes(tmp_path, seed: int = 3) -> KeyChanges:
    midi = save(random_midi(seed, n_notes=70, with_pedal=False), tmp_path / "song.mid")
    _, changes = read_piece(midi)
    return changes


def reading_restrike(changes: KeyChanges, t: int, key: int) -> bool:
    """Whether the press of `key` at sample t follows a one-sample lift (a re-strike)."""
    row = int(np.searchsorted(changes.starts, t))
    return row >= 2 and bool(changes.states[row - 2, key]) and changes.starts[row - 1] == t - 1


def onsets(changes: KeyChanges) -> list[tuple[int, int]]:
    """(sample, key) of every press."""
    s = changes.states
    pressed = s.copy()
    pressed[1:] &= ~s[:-1]
    rows, keys = np.nonzero(pressed)
    return sorted(zip(changes.starts[rows].tolist(), keys.tolist(), strict=True))


@pytest.mark.parametrize("seed,size,fps", [(7, (640, 96), None), (8, (854, 120), 30.0),
                                           (9, (426, 40), 25.0)])
def test_camera_videos_decode_to_the_right_key_states(tmp_path, seed, size, fps):
    changes = song_changes(tmp_path)
    cam = Camera(random_camera(seed, size))
    write_camera_video(tmp_path / "cam.mp4", changes, cam, fps=fps)
    reading = read_keys(tmp_path / "cam.mp4")
    assert reading.layout.shape == (size[1], size[0]) and not reading.warnings
    if fps is None:  # the frames at the key changes: the same states at the same samples
        assert np.array_equal(reading.changes.starts, changes.starts)
        assert np.array_equal(reading.changes.states, changes.states)
    else:  # every press seen once, near its time (but a key struck again within
        period = SR / fps  # a frame of its last press: the camera cannot tell)
        got = {}
        for t, k in onsets(reading.changes):
            got.setdefault(k, []).append(t)
        last: dict[int, float] = {}
        for t0, k in onsets(changes):
            unseen = t0 - last.get(k, -1e9) <= period
            last[k] = t0
            # dated mid-interval: within half a frame; a re-struck key is seen lifting in the
            # next frame and down again in the one after
            late = 1.5 * period if reading_restrike(changes, t0, k) else 0.5 * period
            match = [t for t in got.get(k, []) if -0.5 * period - 1 <= t - t0 <= late + 1]
            assert match or unseen, (t0, k)
            if match:
                got[k].remove(match[0])
        assert not any(got.values())  # nothing read that was not played
        # and the reading is exactly what the training's camera mix shows the model
        assert reading.changes.equals(camera_reading(changes, fps))


def two_pass_reading(path) -> KeyChanges:
    """The reading as two decoding passes make it: calibrate on the rest pictures of every
    frame, then read each frame's key values (what `read_video_keys` does in one)."""
    from deepsynth.sim.keystates import changes_from_states
    from deepsynth.sim.video import iter_frames, piece_length, video_info

    info = video_info(path)
    cal = reader.calibrate(reader.rest_pictures(img for _, img in iter_frames(path,
                                                                            merge=False)))
    starts, values = [], []
    for start, img in iter_frames(path, merge=False):
        starts.append(start)
        values.append(cal.values(img[None])[0])
    cal.fit_shades(np.stack(values))
    states = cal.states_of(np.stack(values))
    starts_a = np.asarray(starts, np.int64) - starts[0]
    period = reader.frame_period(starts_a)
    if period is not None:
        starts_a = reader.midpoint_times(starts_a, period)
    return changes_from_states(starts_a, states, info.sample_rate,
                               max(piece_length(info, starts_a), starts_a[-1] + 1))


@pytest.mark.parametrize("seed,size,fps", [(12, (1280, 720), 30.0), (13, (426, 40), None)])
def test_one_pass_reads_what_two_passes_read(tmp_path, seed, size, fps, monkeypatch):
    changes = song_changes(tmp_path, seed)
    path = tmp_path / "cam.mp4"
    write_camera_video(path, changes, Camera(random_camera(seed, size)), fps=fps)
    expected = two_pass_reading(path)
    assert reader.read_video_keys(path).changes.equals(expected)  # all buffered
    frame = size[0] * size[1]
    for budget in (0, 5 * frame):  # nothing buffered / the first frames only
        assert reader.read_video_keys(path, budget=budget).changes.equals(expected)
    # the keyboard elsewhere than the first frame showed it: read again on a second pass
    monkeypatch.setattr(reader, "_keyboard_rows", lambda img: (0, 1))
    assert reader.read_video_keys(path).changes.equals(expected)


def test_order_statistics_and_row_closing_are_numpys_and_scipys():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for n in range(1, 50):
        frames = [rng.integers(0, 256, (5, 9), dtype=np.uint8) for _ in range(n)]
        hi, lo = round(0.9 * (n - 1)), round(0.1 * (n - 1))
        part = np.partition(np.stack(frames), sorted({lo, hi}), axis=0)
        got = reader._order_statistics([f.copy() for f in frames], (hi, lo), block=16)
        assert np.array_equal(got[0], part[hi]) and np.array_equal(got[1], part[lo])
    for _ in range(200):
        mask = rng.random((int(rng.integers(1, 8)), int(rng.integers(1, 50)))) < rng.random()
        k = int(rng.integers(1, 6))
        closed = ndimage.binary_closing(mask, structure=np.ones((1, 2 * k + 1)), border_value=0)
        assert np.array_equal(reader._close_rows(mask, k), closed | mask)


@pytest.mark.parametrize("seed,fps", [(10, 30.0), (11, 60.0)])
def test_camera_reading_is_what_the_reader_reads(tmp_path, seed, fps):
    changes = song_changes(tmp_path, seed)
    write_camera_video(tmp_path / "cam.mp4", changes, Camera(random_camera(seed, (640, 96))),
                       fps=fps)
    expected = camera_reading(changes, fps)
    assert read_keys(tmp_path / "cam.mp4").changes.equals(expected)
    assert expected.n_samples == changes.n_samples and not expected.equals(changes)


def test_a_re_strike_shows_for_a_frame_at_a_constant_rate():
    # key 40 down at 0, struck again at sample 1000 (up for one sample), up at 3000
    states = np.zeros((4, 88), bool)
    states[[0, 2], 40] = True
    changes = KeyChanges(np.array([0, 999, 1000, 3000]), states, SR, 4000)
    pts, shown = camera_schedule(changes, 30.0)
    column = shown[:, 40]
    assert column[0] and column[-1] == 0
    lifted = np.flatnonzero(~column[: np.searchsorted(pts, 3000)])
    assert len(lifted) == 1 and pts[lifted[0]] >= 1000  # up for exactly one frame, after it
    # a note shorter than a frame is shown once
    short = np.zeros((3, 88), bool)
    short[1, 10] = True
    pts, shown = camera_schedule(KeyChanges(np.array([0, 10, 20]), short, SR, 400), 30.0)
    assert shown[:, 10].sum() == 1


@pytest.mark.parametrize("frames", [
    np.zeros((5, 96, 640), np.uint8),  # blank
    np.random.default_rng(0).integers(0, 256, (5, 96, 640)).astype(np.uint8),  # noise
    keyboard.layout().render(np.zeros((5, 88), bool))[:, :, :390],  # a keyboard cut in half
    np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (5, 96, 1)),  # a gradient
], ids=["blank", "noise", "half", "gradient"])
def test_pictures_without_a_keyboard_get_the_clear_error(frames):
    with pytest.raises(DeepSynthError, match="no 88-key keyboard found in"):
        reader.calibrate(reader.rest_pictures(frames))


def test_a_key_held_all_along_is_read_as_held():
    states = every_key_states()
    states[:, 39] = True  # a white key
    states[:, 40] = True  # a black key
    _, got = read_frames(Camera(random_camera(11, (640, 96))).render(states, np.arange(240)))
    assert np.array_equal(got, states)


def test_a_reading_that_looks_wrong_warns():
    states = np.zeros((50, 88), bool)
    states[:, 20:80:6] = True  # ten keys down throughout
    states[::2, 61] = True  # a black key and a white one pressed now and then
    states[1::3, 63] = True
    cal, got = read_frames(keyboard.layout().render(states))
    cal.check_reading(got)
    assert any("held for most of the piece" in w for w in cal.warnings)


def test_simulator_video_still_decodes_exactly(tmp_path):
    changes = song_changes(tmp_path)
    write_video(tmp_path / "v.mp4", changes)
    reading = read_keys(tmp_path / "v.mp4")
    assert np.array_equal(reading.changes.states, changes.states)
    assert reading.layout == keyboard.layout()


def test_camera_config_round_trips_through_the_metadata():
    cfg = random_camera(5)
    again = CameraConfig(**json.loads(json.dumps(cfg.to_dict())) | {
        "corners": tuple(map(tuple, cfg.to_dict()["corners"]))})
    assert again == cfg
    assert cfg.width % 2 == 0 and cfg.height % 2 == 0
    corners = np.asarray(cfg.corners)
    assert corners.min() >= 0 and (corners <= [cfg.width, cfg.height]).all()


def run(*args):
    return subprocess.run([sys.executable, "-m", "deepsynth", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_simulate_camera_then_video2midi_and_synthesize(tmp_path):
    notes = [(60, 90, 0, TPB), (62, 80, TPB, 2 * TPB), (61, 100, TPB, 3 * TPB),
             (60, 70, 2 * TPB, 3 * TPB), (96, 110, 0, 4 * TPB), (22, 60, TPB, 4 * TPB)]
    song = save(make_midi(notes), tmp_path / "song.mid")
    r = run("simulate", song, "-o", tmp_path / "cam", "--camera", 3, "--fps", 30)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "cam" / "song.json").read_text())
    assert meta["camera"]["seed"] == 3 and meta["fps"] == 30
    r = run("video2midi", tmp_path / "cam" / "song.mp4", "-o", tmp_path / "dec.mid")
    assert r.returncode == 0, r.stderr
    assert f"{len(notes)} notes" in r.stdout, r.stdout
    r = run("synthesize", tmp_path / "cam" / "song.mp4", "-o", tmp_path / "gen.wav",
            "--duration", 1, "-q")
    assert r.returncode == 0, r.stderr
    r = run("simulate", song, "-o", tmp_path / "x", "--camera", -1)
    assert r.returncode == 2 and "--camera" in r.stderr
