import av
import numpy as np
import pytest
from midi_factory import random_midi, save

from deepsynth.errors import DeepSynthError
from deepsynth.sim import keyboard as kb
from deepsynth.sim.keystates import key_changes, notes_from_key_changes
from deepsynth.sim.midi import read_midi
from deepsynth.sim.video import read_key_changes, read_video, video_info, write_video

SR = 4000


def _changes(tmp_path, seed):
    piece = read_midi(save(random_midi(seed), tmp_path / f"r{seed}.mid"))
    return key_changes(piece.notes, SR, n_samples=int(piece.notes.duration * SR) + 4000)


def test_mp4_frames_bit_exact_with_exact_start_samples(tmp_path):
    changes = _changes(tmp_path, 0)
    audio = (np.sin(np.arange(changes.n_samples) / 5) * 8000).astype(np.int16)
    write_video(tmp_path / "v.mp4", changes, audio)
    video = read_video(tmp_path / "v.mp4")
    assert np.array_equal(video.starts, changes.starts)
    assert np.array_equal(video.frames, kb.render(changes.states))
    assert (video.sample_rate, video.n_samples) == (SR, changes.n_samples)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_midi_video_decoder_round_trip(tmp_path, seed):
    """MIDI -> key states -> mp4 -> pixels -> key states -> notes: all exact."""
    changes = _changes(tmp_path, seed)
    write_video(tmp_path / "v.mp4", changes)
    back = read_key_changes(tmp_path / "v.mp4")
    assert back.equals(changes) and back.n_samples == changes.n_samples
    notes = notes_from_key_changes(back)
    assert key_changes(notes, SR, changes.n_samples).equals(changes)


def test_mp4_has_video_and_audio_streams_that_decode(tmp_path):
    changes = _changes(tmp_path, 4)
    audio = (np.random.default_rng(0).standard_normal(changes.n_samples) * 3000).astype(np.int16)
    write_video(tmp_path / "v.mp4", changes, audio)
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac"
        decoded = sum(f.samples for f in c.decode(audio=0))
        rate = c.streams.audio[0].rate
        seconds = float(c.duration / av.time_base)
    assert abs(decoded / rate - changes.n_samples / SR) < 0.1
    assert abs(seconds - changes.n_samples / SR) < 0.1


def test_constant_frame_rate_shows_state_at_each_frame_time(tmp_path):
    changes = _changes(tmp_path, 5)
    write_video(tmp_path / "cfr.mp4", changes, fps=25)
    with av.open(str(tmp_path / "cfr.mp4")) as c:
        n_frames = sum(1 for _ in c.decode(video=0))
    assert n_frames == int(np.ceil(changes.n_samples * 25 / SR))
    video = read_video(tmp_path / "cfr.mp4")
    assert np.all(video.starts % (SR // 25) == 0)  # frame times on the 25 fps grid
    rows = np.searchsorted(changes.starts, video.starts, side="right") - 1
    assert np.array_equal(kb.read_key_states(video.frames), changes.states[rows])


def test_a_video_of_any_size_is_read_and_one_without_a_keyboard_is_refused(tmp_path):
    path = tmp_path / "small.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())
    video = read_video(path, 4000)
    assert video.frames.shape[1:] == (48, 64)
    with pytest.raises(DeepSynthError, match="no 88-key keyboard found in .*small.mp4"):
        read_key_changes(path, 4000)


def test_not_a_video(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 100)
    with pytest.raises(DeepSynthError, match="not a readable video"):
        video_info(tmp_path / "junk.mp4")
    with pytest.raises(DeepSynthError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


def test_failed_write_leaves_no_file(tmp_path):
    changes = _changes(tmp_path, 6)

    def broken_frames():
        yield 0, kb.render(changes.states[0])
        raise RuntimeError("disk on fire")

    from deepsynth.sim.video import write_frames

    with pytest.raises(RuntimeError):
        write_frames(tmp_path / "x.mp4", broken_frames(), SR, changes.n_samples)
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*")) == []


def test_a_video_deepsynth_did_not_write_is_timed_at_the_rate_the_caller_gives(tmp_path):
    path = tmp_path / "camera.mp4"
    with av.open(str(path), "w") as c:  # no sample-rate tag: 10 frames at 25 fps
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = kb.WIDTH, kb.HEIGHT, "gray"
        for i in range(10):
            img = np.full((kb.HEIGHT, kb.WIDTH), 40 * (i % 2) + 100, np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="gray")))
        c.mux(s.encode())
    with pytest.raises(DeepSynthError, match="not written by DeepSynth"):
        video_info(path)
    for rate in (4000, 16000):
        info = video_info(path, rate)
        assert info.sample_rate == rate and info.n_samples is None
        video = read_video(path, rate)
        assert video.sample_rate == rate
        np.testing.assert_array_equal(video.starts, np.arange(10) * rate // 25)
