"""Keyboard videos as mp4 files (PyAV): write frames at exact sample times, read them back.

Writing, for a person (the default): H.264 High profile, yuv420p, even width and height (the
780x57 keyboard is padded to 780x58 by repeating its last row), nearly lossless (crf 10), with
AAC audio: what QuickTime, Safari, Windows' player, browsers and phones all open. For decoding
bit for bit (`lossless=True`, `deepsynth simulate --lossless`): the exact gray picture, H.264 in
the `gray` pixel format at qp 0 (High 4:4:4 Predictive, which many players refuse). Either way
one frame per key-state change at its exact time (variable frame rate), or `fps` frames a second
like a camera. The audio goes in as a second stream (AAC; at 16 kHz when the audio rate is below
that, since AAC cannot be 4 kHz). The sample rate and length of the piece are kept in the
container's comment tag, so a reader recovers exact sample indices; a player video's tag also
names the picture's own size and its luma levels (`picture=780x57 levels=tv`).

Reading: unique frames (identical consecutive frames are merged) with the sample index at which
each starts, as gray pictures of any size (gray: the Y plane as is; other pixel formats are
converted to gray). A player video DeepSynth wrote is cropped to its picture and its levels
undone; when that picture is the simulator's keyboard, each frame is read through the
simulator's layout (the mean of each key's pixels) and drawn anew, so the frames, and the key
states, come back exactly as written from either format. A video DeepSynth did not write has no
tag: the caller gives the sample rate of its time grid. Key states: the simulator's own picture
(780x57 gray) is read exactly through the simulator's layout, as ever; any other video goes
through the key reader (deepsynth.reader), calibrated on the video itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from deepsynth.atomic import atomic_path
from deepsynth.errors import DeepSynthError
from deepsynth.layout import KeyboardLayout
from deepsynth.sim import keyboard
from deepsynth.sim.keystates import KeyChanges, changes_from_states

AAC_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
_TAG = re.compile(r"deepsynth sample_rate=(\d+) n_samples=(\d+)(?: picture=(\d+)x(\d+))?"
                  r"(?: levels=(tv))?")
# 8-bit pixel formats whose first plane is the picture's luma (read as is, no range conversion)
LUMA_FIRST = frozenset({"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p",
                        "yuvj444p", "nv12", "nv21"})
RENDER_CHUNK = 256  # frames rendered at a time while writing (keeps memory flat)
# the player format: H.264 High, yuv420p; crf 10 keeps every key's mean within a few levels
PLAYER_OPTIONS = {"crf": "10", "preset": "veryfast", "profile": "high", "level": "4.0"}
LOSSLESS_OPTIONS = {"qp": "0", "preset": "veryfast"}  # qp 0 in gray: lossless, bit exact
# full-range gray 0..255 <-> video ("tv") luma 16..235, as players expect yuv420p
TV_LEVELS = np.round(16 + np.arange(256) * 219 / 255).astype(np.uint8)
FULL_LEVELS = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
SNAP_TOLERANCE = 24.0  # a key's mean this near its shade is read as that shade (gap >= 70)


def _aac_rate(sample_rate: int) -> int:
    return sample_rate if sample_rate in AAC_RATES else 16000


def frame_schedule(changes: KeyChanges, fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(pts in samples, row of `changes.states`) of every frame to write.

    Variable rate: one frame per change, plus the final state repeated on the last sample so the
    video lasts as long as the audio. Constant rate: a frame every 1/fps s showing the state at
    that instant.
    """
    n = changes.n_samples
    if fps is None:
        pts = np.r_[changes.starts, n - 1] if changes.starts[-1] < n - 1 else changes.starts
        rows = np.r_[np.arange(len(changes)), len(changes) - 1][: len(pts)]
        return pts.astype(np.int64), rows
    if fps <= 0:
        raise DeepSynthError(f"fps must be positive, got {fps}")
    sr = changes.sample_rate
    count = int(np.ceil(n * fps / sr))
    pts = np.floor(np.arange(count) * sr / fps + 0.5).astype(np.int64)
    pts = pts[pts < n]
    rows = np.searchsorted(changes.starts, pts, side="right") - 1
    return pts, rows


def write_video(
    path: str | os.PathLike,
    changes: KeyChanges,
    audio: np.ndarray | None = None,
    fps: float | None = None,
    lossless: bool = False,
) -> None:
    """Write the keyboard video of `changes` (+ int16 `audio` at its sample rate) to an mp4:
    in the players' format, or the exact gray stream with `lossless`."""
    pts, rows = frame_schedule(changes, fps)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(pts), RENDER_CHUNK):
            images = keyboard.layout().render(changes.states[rows[lo : lo + RENDER_CHUNK]])
            yield from zip(pts[lo : lo + RENDER_CHUNK].tolist(), images, strict=True)

    write_frames(path, frames(), changes.sample_rate, changes.n_samples, audio, lossless=lossless)


def write_camera_video(
    path: str | os.PathLike,
    changes: KeyChanges,
    camera,
    audio: np.ndarray | None = None,
    fps: float | None = None,
) -> None:
    """The keyboard of `changes` as `camera` (deepsynth.sim.camera.Camera) films it: lossy
    H.264 in yuv420p at the camera's size, at a constant `fps` or at the key changes."""
    from deepsynth.sim.camera import camera_schedule

    pts, states = camera_schedule(changes, fps)
    chunk = max(1, RENDER_CHUNK * keyboard.WIDTH * keyboard.HEIGHT
                // (camera.cfg.width * camera.cfg.height))

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(pts), chunk):
            images = camera.render(states[lo : lo + chunk], np.arange(lo, lo + chunk))
            yield from zip(pts[lo : lo + chunk].tolist(), images, strict=False)

    write_frames(path, frames(), changes.sample_rate, changes.n_samples, audio,
                 size=(camera.cfg.width, camera.cfg.height), pix_fmt="yuv420p",
                 options={"crf": str(camera.cfg.crf), "preset": "veryfast", "profile": "high"})


def write_frames(
    path: str | os.PathLike,
    frames: Iterable[tuple[int, np.ndarray]],
    sample_rate: int,
    n_samples: int,
    audio: np.ndarray | None = None,
    size: tuple[int, int] = (keyboard.WIDTH, keyboard.HEIGHT),
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    lossless: bool = False,
) -> None:
    """Write (pts in samples, gray uint8 image of `size` = (width, height)) frames, and
    optionally audio, to an mp4: by default in the players' format (H.264 High, yuv420p, even
    size, tv levels; see the module's doc), lossless gray (qp 0) with `lossless`, else
    `pix_fmt` with the encoder `options` (a camera's lossy video, converted by swscale)."""
    import av

    width, height = size
    tag = f"deepsynth sample_rate={sample_rate} n_samples={n_samples}"
    player = pix_fmt is None and not lossless
    if player:
        pix_fmt, coded = "yuv420p", (width + width % 2, height + height % 2)
        tag += f" picture={width}x{height} levels=tv"
        options = options or PLAYER_OPTIONS
    elif lossless or pix_fmt == "gray":
        pix_fmt, coded, options = "gray", size, options or LOSSLESS_OPTIONS
    else:
        coded = size
    time_base = Fraction(1, sample_rate)
    container_options = {"movflags": "+faststart"}  # browsers play it while it downloads
    with atomic_path(path, suffix=".mp4") as tmp, \
            av.open(str(tmp), "w", format="mp4", options=container_options) as out:
        out.metadata["comment"] = tag
        video = out.add_stream("libx264")
        video.width, video.height = coded
        video.pix_fmt = pix_fmt
        video.options = dict(options or {})
        video.time_base = video.codec_context.time_base = time_base
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=_aac_rate(sample_rate))
            astream.layout = "mono"
            astream.options = {"b": "32k"}  # ample for low-rate audio; 3x faster than the default
        for t, img in frames:
            if player:
                frame = _player_frame(img, coded)
            else:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="gray")
                if pix_fmt != "gray":
                    frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = int(t), time_base
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if astream is not None:
            _encode_audio(out, astream, np.asarray(audio), sample_rate)


def _player_frame(img: np.ndarray, coded: tuple[int, int]):
    """A gray picture as a yuv420p frame of the even `coded` size: luma at tv levels (the
    picture's last row and column repeated into the padding), neutral chroma."""
    import av

    width, height = coded
    y = TV_LEVELS[np.asarray(img, np.uint8)]
    pad_h, pad_w = height - y.shape[0], width - y.shape[1]
    if pad_h or pad_w:
        y = np.pad(y, ((0, pad_h), (0, pad_w)), mode="edge")
    chroma = np.full((height // 2, width), 128, np.uint8)  # U then V, (h/2, w/2) each
    return av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")


AUDIO_BLOCK = 1 << 18  # samples resampled and encoded at a time (memory bounded by a block)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    """The sound track, resampled to the stream's rate and encoded block by block (the same
    samples as resampling the whole piece at once: deepsynth.sim.synth.StreamingResampler)."""
    import av

    from deepsynth.sim.synth import StreamingResampler

    rate = stream.rate
    audio = np.asarray(audio)
    ratio = Fraction(rate, sample_rate)
    resampler = (StreamingResampler(ratio.numerator, ratio.denominator, len(audio))
                 if rate != sample_rate else None)
    pts = 0

    def put(x: np.ndarray) -> None:
        nonlocal pts
        if not len(x):
            return
        frame = av.AudioFrame.from_ndarray(np.clip(x, -1, 1).astype(np.float32)[None],
                                           format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, pts
        pts += len(x)
        container.mux(stream.encode(frame))

    for lo in range(0, len(audio), AUDIO_BLOCK):
        x = audio[lo : lo + AUDIO_BLOCK]
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        put(resampler.push(x) if resampler is not None else x)
    if resampler is not None:
        put(resampler.finish())
    container.mux(stream.encode())


@dataclass(frozen=True)
class VideoInfo:
    sample_rate: int
    n_samples: int | None  # known for videos DeepSynth wrote
    picture: tuple[int, int] | None = None  # (width, height) inside a player video's padding
    tv_levels: bool = False  # a player video: luma at 16..235 stands for gray 0..255


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.exists():
        raise DeepSynthError(f"{p}: no such file")
    if p.is_dir():
        raise DeepSynthError(f"{p}: is a directory, not a video")
    try:
        container = av.open(str(p))
    except av.FFmpegError as e:
        raise DeepSynthError(f"{p}: not a readable video ({e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise DeepSynthError(f"{p}: has no video stream")
    return container


def is_simulator_picture(path: str | os.PathLike) -> bool:
    """Whether the video shows the simulator's own picture, exactly: its first frame is the
    780x57 drawing, every pixel at its key's rest or pressed shade (lossless)."""
    lay = keyboard.layout()
    for _, img in iter_frames(path, sample_rate=1):
        return img.shape == lay.shape and bool(np.all((img == lay.base) | (img == lay.pressed)))
    return False


def video_info(path: str | os.PathLike, sample_rate: int | None = None) -> VideoInfo:
    """The sample rate and length DeepSynth tagged the video with; for an untagged video,
    `sample_rate` (required then) and an unknown length."""
    with _open(path) as container:
        return _info(container, sample_rate, path)


def _info(container, sample_rate: int | None, path) -> VideoInfo:
    m = _TAG.search(container.metadata.get("comment", ""))
    if m:
        picture = (int(m.group(3)), int(m.group(4))) if m.group(3) else None
        return VideoInfo(int(m.group(1)), int(m.group(2)), picture, m.group(5) == "tv")
    if sample_rate is None or sample_rate <= 0:
        raise DeepSynthError(f"{path}: video was not written by DeepSynth (no sample-rate tag): "
                             f"give the sample rate to time its frames at")
    return VideoInfo(sample_rate, None)


THREADED_PIXELS = 1280 * 720  # frames this large decode in threads (smaller ones gain nothing)


def iter_frames(
    path: str | os.PathLike, sample_rate: int | None = None, merge: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start sample, gray uint8 frame (H, W)) for each run of identical frames; with
    `merge=False` every decoded frame, as a view valid until the next one (copy to keep it)."""
    import av

    container = _open(path)
    try:
        info = _info(container, sample_rate, path)
        sr = info.sample_rate
        stream = container.streams.video[0]
        if stream.codec_context.width * stream.codec_context.height >= THREADED_PIXELS:
            stream.thread_type = "AUTO"  # frame threads: 1080p decodes 2x faster (measured)
        previous = None
        for frame in container.decode(stream):
            if frame.format.name in LUMA_FIRST:  # the 8-bit luma plane as stored
                plane = frame.planes[0]
                img = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
                img = img[:, : frame.width]
            else:
                img = frame.to_ndarray(format="gray")
            if info.picture is not None:  # a player video DeepSynth wrote: its own picture
                img = _player_picture(img, info)
            t = frame.pts if frame.pts is not None else 0
            start = int(round(Fraction(t) * frame.time_base * sr))
            if not merge:
                yield start, img
                continue
            if previous is not None and np.array_equal(img, previous):
                continue
            previous = img.copy()
            yield start, previous
    except av.FFmpegError as e:
        raise DeepSynthError(f"{path}: video cannot be decoded ({e.strerror or e})") from None
    finally:
        container.close()


def _player_picture(img: np.ndarray, info: VideoInfo) -> np.ndarray:
    """A decoded player-video frame as the picture written: cropped to it, its levels undone,
    and, for the simulator's keyboard, read through its layout and drawn anew (exact)."""
    width, height = info.picture
    img = img[:height, :width]
    if info.tv_levels:
        img = FULL_LEVELS[img]
    lay = keyboard.layout()
    if img.shape != lay.shape:
        return img
    means = lay.key_means(img)
    down = np.abs(means - lay.pressed_shade) < np.abs(means - lay.rest_shade)
    shade = np.where(down, lay.pressed_shade, lay.rest_shade)
    if np.max(np.abs(means - shade)) > SNAP_TOLERANCE:  # not the simulator's drawing
        return img
    return lay.render(down)


@dataclass(frozen=True)
class VideoFrames:
    frames: np.ndarray  # (N, H, W) uint8, consecutive frames differ
    starts: np.ndarray  # (N,) int64 sample index where each frame starts
    sample_rate: int
    n_samples: int


def read_video(path: str | os.PathLike, sample_rate: int | None = None) -> VideoFrames:
    """All unique frames of a keyboard video and the sample index at which each starts."""
    info = video_info(path, sample_rate)
    starts, frames = [], []
    for start, img in iter_frames(path, sample_rate):
        starts.append(start)
        frames.append(img)
    if not frames:
        raise DeepSynthError(f"{path}: video has no frames")
    starts_a = np.asarray(starts, dtype=np.int64)
    starts_a -= starts_a[0]  # a video's first frame is shown from its first sample
    n = info.n_samples if info.n_samples is not None else int(starts_a[-1]) + 1
    return VideoFrames(np.stack(frames), starts_a, info.sample_rate, max(n, int(starts_a[-1]) + 1))


def piece_length(info: VideoInfo, starts: np.ndarray) -> int:
    """Samples a video lasts: as tagged, else one second past its last frame's start."""
    return info.n_samples if info.n_samples is not None else int(starts[-1]) + info.sample_rate


@dataclass(frozen=True)
class KeyReading:
    changes: KeyChanges  # the key states read, at the frames' sample times
    layout_of: Callable[[], KeyboardLayout]  # the keyboard as the video shows it, on demand
    warnings: tuple[str, ...] = ()  # the reading looks wrong (one line each)

    @property
    def layout(self) -> KeyboardLayout:
        return self.layout_of()


def read_keys(path: str | os.PathLike, sample_rate: int | None = None) -> KeyReading:
    """Key states of every frame: the simulator's picture through its own layout (exact),
    any other video through the key reader calibrated on it (DeepSynthError "no 88-key
    keyboard found in PATH" when it finds none)."""
    if is_simulator_picture(path):
        video = read_video(path, sample_rate)
        states = keyboard.layout().read_key_states(video.frames)
        changes = changes_from_states(video.starts, states, video.sample_rate, video.n_samples)
        return KeyReading(changes, keyboard.layout)
    from deepsynth.reader import read_video_keys

    return read_video_keys(path, sample_rate)  # one decoding pass


def read_key_changes(path: str | os.PathLike, sample_rate: int | None = None) -> KeyChanges:
    """The reference decoder: the key states of every frame (see `read_keys`)."""
    return read_keys(path, sample_rate).changes
