"""The mp4s meant for a person open in any player (H.264 Main/High, yuv420p, even size, AAC),
and every reader still gets the exact key states back from them and from the lossless stream."""

from pathlib import Path

import av
import numpy as np
import pytest
from midi_factory import random_midi, save

from deepsynth.cli import main
from deepsynth.generate.generator import Window
from deepsynth.generate.outputs import write_mp4
from deepsynth.generate.sources import open_source, source_from_changes
from deepsynth.sim import keyboard as kb
from deepsynth.sim.keystates import key_changes
from deepsynth.sim.midi import read_midi
from deepsynth.sim.video import (
    is_simulator_picture,
    read_key_changes,
    read_video,
    video_info,
    write_video,
)

SR = 4000


def _changes(tmp_path: Path, seed: int):
    piece = read_midi(save(random_midi(seed), tmp_path / f"r{seed}.mid"))
    return key_changes(piece.notes, SR, n_samples=int(piece.notes.duration * SR) + 4000)


def _format(path: Path) -> dict:
    """What a player sees: the first video stream's codec, profile, pixel format, size; the
    audio codec; and whether every video frame decodes."""
    with av.open(str(path)) as c:
        v = c.streams.video[0].codec_context
        audio = [s.codec_context.name for s in c.streams.audio]
        n = sum(1 for _ in c.decode(video=0))
        return {"codec": v.name, "profile": v.profile, "pix_fmt": v.pix_fmt, "width": v.width,
                "height": v.height, "audio": audio, "frames": n}


def assert_player_format(path: Path, with_audio: bool = True) -> dict:
    f = _format(path)
    assert f["codec"] == "h264"
    assert f["profile"] in ("Main", "High"), f
    assert f["pix_fmt"] == "yuv420p"
    assert f["width"] % 2 == 0 and f["height"] % 2 == 0, f
    assert f["frames"] > 0
    if with_audio:
        assert f["audio"] == ["aac"]
    return f


def test_player_mp4_format_and_exact_round_trip(tmp_path):
    changes = _changes(tmp_path, 11)
    audio = (np.sin(np.arange(changes.n_samples) / 7) * 9000).astype(np.int16)
    write_video(tmp_path / "p.mp4", changes, audio)
    f = assert_player_format(tmp_path / "p.mp4")
    assert (f["width"], f["height"]) == (780, 58)  # the 780x57 keyboard, padded by a row
    info = video_info(tmp_path / "p.mp4")
    assert info.picture == (780, 57) and info.tv_levels
    video = read_video(tmp_path / "p.mp4")
    assert video.frames.shape[1:] == (57, 780)
    assert np.array_equal(video.starts, changes.starts)
    assert np.array_equal(video.frames, kb.render(changes.states))  # the drawing, exactly
    assert is_simulator_picture(tmp_path / "p.mp4")
    back = read_key_changes(tmp_path / "p.mp4")
    assert back.equals(changes) and back.n_samples == changes.n_samples


def test_lossless_stream_is_exact_gray_and_reads_the_same(tmp_path):
    changes = _changes(tmp_path, 12)
    write_video(tmp_path / "x.mp4", changes, lossless=True)
    f = _format(tmp_path / "x.mp4")
    # monochrome lossless H.264 (FFmpeg decodes it as yuv420p with flat chroma)
    assert (f["profile"], f["width"], f["height"]) == ("High 4:4:4 Predictive", 780, 57)
    with av.open(str(tmp_path / "x.mp4")) as c:  # the pixels as stored: the drawing itself
        fr = next(c.decode(video=0))
        plane = fr.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(fr.height, plane.line_size)
    assert np.array_equal(luma[:, : fr.width], kb.render(changes.states[0]))
    assert video_info(tmp_path / "x.mp4").picture is None
    back = read_key_changes(tmp_path / "x.mp4")
    assert back.equals(changes)


def test_constant_rate_player_video_reads_exactly(tmp_path):
    changes = _changes(tmp_path, 13)
    write_video(tmp_path / "c.mp4", changes, fps=30)
    assert_player_format(tmp_path / "c.mp4", with_audio=False)
    video = read_video(tmp_path / "c.mp4")
    rows = np.searchsorted(changes.starts, video.starts, side="right") - 1
    assert np.array_equal(video.frames, kb.render(changes.states[rows]))


def test_generated_mp4_is_in_the_players_format_and_decodes_to_its_keys(tmp_path):
    changes = _changes(tmp_path, 14)
    source = source_from_changes(changes, tmp_path / "r14.mid", kind="midi")
    audio = np.zeros(changes.n_samples, np.int16)
    write_mp4(tmp_path / "g.mp4", source, Window(0, changes.n_samples), audio)
    assert_player_format(tmp_path / "g.mp4")
    assert read_key_changes(tmp_path / "g.mp4").equals(changes)
    again = open_source(tmp_path / "g.mp4", SR)  # what synthesize reads: the exact frames
    frames = np.concatenate(list(again.frame_batches()))
    assert np.array_equal(again.starts, changes.starts)
    assert np.array_equal(frames, kb.render(changes.states))


@pytest.mark.parametrize("lossless", [False, True])
def test_simulate_and_video2midi_on_both_formats(tmp_path, lossless, capsys):
    midi = save(random_midi(15), tmp_path / "song.mid")
    args = ["simulate", str(midi), "-o", str(tmp_path / "out"), "-q"]
    assert main(args + (["--lossless"] if lossless else [])) == 0
    video = tmp_path / "out" / "song.mp4"
    if lossless:
        assert _format(video)["profile"] == "High 4:4:4 Predictive"
    else:
        assert_player_format(video)
    assert main(["video2midi", str(video), "-o", str(tmp_path / "back.mid")]) == 0
    piece = read_midi(midi)
    truth = key_changes(piece.notes, SR)
    back = read_key_changes(video)
    assert np.array_equal(back.states, truth.states[: len(back.states)])
    assert np.array_equal(back.starts, truth.starts[: len(back.starts)])
    capsys.readouterr()


def test_camera_mode_refuses_lossless(tmp_path, capsys):
    midi = save(random_midi(16), tmp_path / "song.mid")
    rc = main(["simulate", str(midi), "-o", str(tmp_path / "o"), "--camera", "1", "--lossless"])
    assert rc == 2
    assert "--lossless" in capsys.readouterr().err


def test_synthesize_writes_the_players_format_or_the_lossless_stream(tmp_path, capsys):
    midi = save(random_midi(17), tmp_path / "song.mid")
    for name, extra in (("p.mp4", []), ("x.mp4", ["--lossless"])):
        out = tmp_path / name
        args = ["synthesize", str(midi), "-o", str(out), "--duration", "0.5", "-q"]
        assert main(args + extra) == 0
        if extra:
            assert _format(out)["profile"] == "High 4:4:4 Predictive"
        else:
            assert_player_format(out)
        back = read_key_changes(out)
        truth = key_changes(read_midi(midi).notes, SR)
        shown = truth.starts < back.n_samples
        assert np.array_equal(back.states, truth.states[shown])
    capsys.readouterr()
