"""Camera mode: the simulated keyboard as a fixed camera above it would film it.

A `CameraConfig` (drawn at random from a seed by `random_camera`, recorded in the metadata) says
how the keyboard is drawn (black-key width and height, the shades of every key state), where it
lies in a larger frame (its four corners: shifted, scaled, slightly rotated, in mild
perspective), on what background, and how the picture degrades (blur, sensor noise, gain,
offset and gamma); the video is then lossy H.264 in yuv420p at a constant frame rate or at the
key changes. `Camera.render` turns key states into such frames.

At a constant frame rate a frame shows the keys at its instant, except that a key re-struck
since the previous frame is shown up (the camera sees it lift, for one frame) and a key pressed
and released between two frames is shown down (it is seen once): every strike is visible.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from deepsynth.layout import KeyboardLayout
from deepsynth.reader import CANVAS, apply_homography, homography, midpoint_times
from deepsynth.sim import keyboard
from deepsynth.sim.keystates import KeyChanges, changes_from_states

CAMERA_RATES = (25, 30, 60)  # the constant frame rates of camera mode (fps)
FRAME_SIZES = ((426, 40), (640, 96), (854, 120), (1280, 180), (1280, 720), (1920, 1080))


@dataclass(frozen=True)
class CameraConfig:
    seed: int
    width: int  # the video frame, even sizes (yuv420p)
    height: int
    corners: tuple[tuple[float, float], ...]  # keyboard's TL, TR, BR, BL in the frame (x, y) px
    black_key_width: int = keyboard.BLACK_KEY_WIDTH  # the keyboard as drawn (px of the 780x57)
    black_key_height: int = keyboard.BLACK_KEY_HEIGHT
    white_up: int = keyboard.WHITE_UP
    white_down: int = keyboard.WHITE_DOWN
    black_up: int = keyboard.BLACK_UP
    black_down: int = keyboard.BLACK_DOWN
    border: int = keyboard.BORDER
    background: float = 40.0  # the surface around the keyboard (0..255)
    gradient: float = 20.0  # its change from left to right
    blur: float = 0.0  # Gaussian sigma, frame px
    noise: float = 0.0  # sensor noise std, levels of 255
    gain: float = 1.0  # y = 255 * (gain * x / 255 + offset) ** gamma
    offset: float = 0.0
    gamma: float = 1.0
    crf: int = 23  # H.264 quality (0 lossless .. 51)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def layout(self) -> KeyboardLayout:
        """The keyboard as drawn before the camera sees it (780x57 canvas)."""
        return keyboard.draw(black_key_width=self.black_key_width,
                             black_key_height=self.black_key_height, white_up=self.white_up,
                             white_down=self.white_down, black_up=self.black_up,
                             black_down=self.black_down, border=self.border)


def random_camera(seed: int, size: tuple[int, int] | None = None) -> CameraConfig:
    """A camera drawn from `seed`: frame size (one of FRAME_SIZES unless given), keyboard 70-95 %
    of the frame's width, shifted, rotated up to 1 degree, perspective up to 3 %, other shades
    and black keys, blur, noise, gain, offset and gamma."""
    rng = np.random.default_rng([int(seed), 0xCA3])
    width, height = size or FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    kw = width * rng.uniform(0.70, 0.95)
    kh = kw * keyboard.HEIGHT / keyboard.WIDTH * rng.uniform(0.9, 1.4)
    kh = min(kh, 0.9 * height)
    cx = width / 2 + rng.uniform(-0.5, 0.5) * (width - kw) * 0.8
    cy = height / 2 + rng.uniform(-0.5, 0.5) * max(height - kh, 0) * 0.8
    angle = np.deg2rad(rng.uniform(-1.0, 1.0))
    tilt = rng.uniform(-0.03, 0.03)  # the far edge a little narrower or wider
    half = np.array([[-kw / 2 * (1 - tilt), -kh / 2], [kw / 2 * (1 - tilt), -kh / 2],
                     [kw / 2 * (1 + tilt), kh / 2], [-kw / 2 * (1 + tilt), kh / 2]])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = half @ rot.T + [cx, cy]
    # the whole keyboard in the frame, a pixel from its edges at least
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    room = np.array([width - 2.0, height - 2.0])
    scale = min(1.0, *(room / (hi - lo)))
    corners = (corners - corners.mean(axis=0)) * scale + corners.mean(axis=0)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    corners += np.clip(1.0 - lo, 0, None) - np.clip(hi - (np.array([width, height]) - 1.0), 0,
                                                     None)
    white_up = int(rng.integers(215, 256))
    black_up = int(rng.integers(0, 50))
    return CameraConfig(
        seed=int(seed), width=int(width), height=int(height),
        corners=tuple((round(float(x), 3), round(float(y), 3)) for x, y in corners),
        black_key_width=int(rng.integers(7, 12)), black_key_height=int(rng.integers(30, 40)),
        white_up=white_up, white_down=int(white_up - rng.integers(50, 100)),
        black_up=black_up, black_down=int(black_up + rng.integers(60, 110)),
        border=int(rng.integers(40, 110)),
        background=float(rng.uniform(10, 120)), gradient=float(rng.uniform(-30, 30)),
        blur=float(rng.uniform(0.0, 1.2)), noise=float(rng.uniform(0.0, 5.0)),
        gain=float(rng.uniform(0.8, 1.1)), offset=float(rng.uniform(-0.05, 0.08)),
        gamma=float(rng.uniform(0.8, 1.25)), crf=int(rng.integers(18, 29)),
    )


class Camera:
    """Key states -> the camera's frames (uint8, height x width)."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.layout = cfg.layout()
        H, W = cfg.height, cfg.width
        to_canvas = homography(np.asarray(cfg.corners), CANVAS)
        ys, xs = np.mgrid[0:H, 0:W]
        uv = apply_homography(to_canvas, np.stack([xs + 0.5, ys + 0.5], axis=-1).astype(np.float64))
        u, v = uv[..., 0] - 0.5, uv[..., 1] - 0.5  # canvas pixel-centre coordinates
        ch, cw = self.layout.shape
        self.inside = (u > -0.5) & (u < cw - 0.5) & (v > -0.5) & (v < ch - 0.5)
        u, v = np.clip(u, 0, cw - 1), np.clip(v, 0, ch - 1)
        u0, v0 = np.minimum(np.floor(u), cw - 2).astype(np.int64), \
            np.minimum(np.floor(v), ch - 2).astype(np.int64)
        fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
        base = v0 * cw + u0
        self.taps = np.stack([base, base + 1, base + cw, base + cw + 1])  # (4, H, W)
        self.weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
        x = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :]
        self.backdrop = np.broadcast_to(cfg.background + cfg.gradient * x, (H, W))

    def render(self, states: np.ndarray, frame_numbers: np.ndarray) -> np.ndarray:
        """(N, 88) key states -> (N, height, width) frames; the noise of frame i depends on the
        seed and `frame_numbers[i]` only (chunks render alike)."""
        from scipy.ndimage import gaussian_filter

        cfg = self.cfg
        canvas = self.layout.render(np.atleast_2d(states)).reshape(len(states), -1)
        out = np.empty((len(states), cfg.height, cfg.width), np.uint8)
        for i, flat in enumerate(canvas.astype(np.float32)):
            img = (flat[self.taps] * self.weights).sum(axis=0)
            img = np.where(self.inside, img, self.backdrop)
            if cfg.blur > 0:
                img = gaussian_filter(img, cfg.blur)
            img = 255.0 * np.clip(cfg.gain * img / 255.0 + cfg.offset, 0, 1) ** cfg.gamma
            if cfg.noise > 0:
                rng = np.random.default_rng([cfg.seed, int(frame_numbers[i]), 0x5E])
                img = img + rng.normal(0, cfg.noise, img.shape).astype(np.float32)
            out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return out


def camera_schedule(changes: KeyChanges, fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(pts in samples, key states shown) of every frame of a camera video: at the key changes
    (fps None; the simulator's own schedule) or at a constant rate, where a key re-struck since
    the previous frame is shown up and one pressed and released between two frames down."""
    from deepsynth.sim.video import frame_schedule

    pts, rows = frame_schedule(changes, fps)
    states = changes.states[rows].copy()
    if fps is None:
        return pts, states
    for i in range(1, len(pts)):
        lo, hi = rows[i - 1], rows[i]  # change rows shown before, and at, this frame
        if hi <= lo:
            continue
        between = changes.states[lo + 1 : hi + 1]  # states that began since the last frame
        was_down = changes.states[lo]
        lifted = (~between).any(axis=0)
        pressed = between.any(axis=0)
        states[i] &= ~(was_down & lifted & states[i])  # re-struck: show it lifted once
        states[i] |= ~was_down & ~states[i] & pressed  # a short note: show it once
    return pts, states


def camera_reading(changes: KeyChanges, fps: float) -> KeyChanges:
    """The key changes that the key reader returns for a camera video of `changes` at a constant
    `fps`, when it reads every frame right: the states its frames show (`camera_schedule`),
    each change dated in the middle of the interval since the frame before (as `read_keys`
    dates them). What a model conditioned on a camera video sees, without drawing the video."""
    pts, states = camera_schedule(changes, fps)
    period = int(round(changes.sample_rate / fps))
    starts = midpoint_times(pts - pts[0], period)
    return changes_from_states(starts, states, changes.sample_rate,
                               max(changes.n_samples, int(starts[-1]) + 1))
