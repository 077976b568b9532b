"""The keyboard picture: 88 keys A0..C8 drawn as a 780x57 8-bit gray frame.

Geometry: 52 white keys of 15 px each (a 1 px dark border at each key's left edge), 36 black
keys 9 px wide and 35 px tall centred on the boundary between their white neighbours. Pressed
white and pressed black keys have shades of their own, so every key's state can be read back
from its pixels.

Frames are drawn from key states by a gather over a per-pixel key map, so a batch of states
renders in one vectorised operation (numpy here; the same maps work with torch on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_KEYS = 88
LOWEST_PITCH = 21  # A0
HIGHEST_PITCH = 108  # C8
WIDTH = 780
HEIGHT = 57
WHITE_KEY_WIDTH = 15
BLACK_KEY_WIDTH = 9
BLACK_KEY_HEIGHT = 35

# Shades (uint8). Pressed white is a light-mid gray, pressed black a dark-mid gray: each pair is
# far apart, so thresholding at the midpoint survives lossy re-encoding.
WHITE_UP = 255
WHITE_DOWN = 170
BLACK_UP = 0
BLACK_DOWN = 100
BORDER = 64

_BLACK_PITCH_CLASSES = {1, 3, 6, 8, 10}  # C#, D#, F#, G#, A#


def is_black(pitch: int) -> bool:
    return pitch % 12 in _BLACK_PITCH_CLASSES


@dataclass(frozen=True)
class KeyboardGeometry:
    """Per-pixel maps of the keyboard.

    key_map: (57, 780) int16, the key index 0..87 that owns each pixel, or -1 for borders.
    base: (57, 780) uint8, the frame with no key pressed.
    pressed: (57, 780) uint8, the shade each pixel takes when its key is pressed.
    black: (88,) bool, which keys are black.
    """

    key_map: np.ndarray
    base: np.ndarray
    pressed: np.ndarray
    black: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        """(88, 57, 780) bool: the pixels each key owns."""
        return self.key_map[None] == np.arange(N_KEYS, dtype=np.int16)[:, None, None]


@lru_cache(maxsize=1)
def geometry() -> KeyboardGeometry:
    key_map = np.full((HEIGHT, WIDTH), -1, dtype=np.int16)
    black = np.array([is_black(LOWEST_PITCH + k) for k in range(N_KEYS)])
    white_index = 0
    for key in range(N_KEYS):
        if black[key]:
            continue
        x0 = white_index * WHITE_KEY_WIDTH
        key_map[:, x0 + 1 : x0 + WHITE_KEY_WIDTH] = key  # column x0 stays a border
        white_index += 1
    assert white_index * WHITE_KEY_WIDTH == WIDTH
    white_index = 0
    for key in range(N_KEYS):
        if not black[key]:
            white_index += 1
            continue
        boundary = white_index * WHITE_KEY_WIDTH  # left edge of the next white key
        x0 = boundary - BLACK_KEY_WIDTH // 2
        key_map[:BLACK_KEY_HEIGHT, x0 : x0 + BLACK_KEY_WIDTH] = key
    black_px = np.isin(key_map, np.flatnonzero(black))
    white_px = (key_map >= 0) & ~black_px
    base = np.full((HEIGHT, WIDTH), BORDER, dtype=np.uint8)
    base[white_px] = WHITE_UP
    base[black_px] = BLACK_UP
    pressed = base.copy()
    pressed[white_px] = WHITE_DOWN
    pressed[black_px] = BLACK_DOWN
    for a in (key_map, base, pressed, black):
        a.setflags(write=False)
    return KeyboardGeometry(key_map=key_map, base=base, pressed=pressed, black=black)


def render(states: np.ndarray) -> np.ndarray:
    """Key states (88,) or (N, 88) bool -> frames (57, 780) or (N, 57, 780) uint8."""
    states = np.asarray(states, dtype=bool)
    single = states.ndim == 1
    states = np.atleast_2d(states)
    if states.shape[-1] != N_KEYS:
        raise ValueError(f"key states must have {N_KEYS} columns, got shape {states.shape}")
    g = geometry()
    # column 88 is "no key" (borders): never pressed
    padded = np.concatenate([states, np.zeros((len(states), 1), dtype=bool)], axis=1)
    down = padded[:, g.key_map]  # (N, 57, 780) via the key map (-1 -> column 88)
    frames = np.where(down, g.pressed, g.base)
    return frames[0] if single else frames


def read_key_states(frames: np.ndarray) -> np.ndarray:
    """Frames (N, 57, 780) or (57, 780) uint8 -> key states (N, 88) / (88,) bool.

    Each key is pressed when the mean of its own pixels is nearer its pressed shade than its
    resting shade (exact on lossless frames, robust to mild compression noise).
    """
    frames = np.asarray(frames)
    single = frames.ndim == 2
    frames = frames.reshape(-1, HEIGHT, WIDTH) if not single else frames[None]
    if frames.shape[1:] != (HEIGHT, WIDTH):
        raise ValueError(f"frames must be {HEIGHT}x{WIDTH}, got {frames.shape[1:]}")
    g = geometry()
    owned = g.key_map.ravel()
    valid = owned >= 0
    counts = np.bincount(owned[valid], minlength=N_KEYS)
    flat = frames.reshape(len(frames), -1)[:, valid].astype(np.float32)
    # per-key pixel sums for every frame: one scatter-add per frame, done as a matmul
    onehot = np.zeros((valid.sum(), N_KEYS), dtype=np.float32)
    onehot[np.arange(valid.sum()), owned[valid]] = 1.0
    means = flat @ onehot / counts
    up = np.where(g.black, BLACK_UP, WHITE_UP)
    down = np.where(g.black, BLACK_DOWN, WHITE_DOWN)
    states = np.abs(means - down) < np.abs(means - up)
    return states[0] if single else states
