"""The simulator's keyboard picture: 88 keys A0..C8 drawn as a 780x57 8-bit gray frame.

Geometry: 52 white keys of 15 px each (a 1 px dark border at each key's left edge), 36 black
keys 9 px wide and 35 px tall centred on the boundary between their white neighbours. Pressed
white and pressed black keys have shades of their own, so every key's state can be read back
from its pixels.

`draw` makes the picture a `KeyboardLayout` (deepsynth.layout), which renders key states by a
gather over its per-pixel key map (a batch in one vectorised operation) and reads them back;
`layout()` is the simulator's own (cached), `render` and `read_key_states` call it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from deepsynth.layout import LOWEST_PITCH, N_KEYS, KeyboardLayout, is_black

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


def draw(
    *, height: int = HEIGHT, white_key_width: int = WHITE_KEY_WIDTH,
    black_key_width: int = BLACK_KEY_WIDTH, black_key_height: int = BLACK_KEY_HEIGHT,
    white_up: int = WHITE_UP, white_down: int = WHITE_DOWN, black_up: int = BLACK_UP,
    black_down: int = BLACK_DOWN, border: int = BORDER,
) -> KeyboardLayout:
    """The keyboard drawn with these sizes (px) and shades (the defaults: the simulator's)."""
    key_map = np.full((height, 52 * white_key_width), -1, dtype=np.int16)
    pitches = np.arange(LOWEST_PITCH, HIGHEST_PITCH + 1)
    black = np.array([is_black(p) for p in pitches])
    white_index = 0
    for key in range(N_KEYS):
        if black[key]:
            continue
        x0 = white_index * white_key_width
        key_map[:, x0 + 1 : x0 + white_key_width] = key  # column x0 stays a border
        white_index += 1
    white_index = 0
    for key in range(N_KEYS):
        if not black[key]:
            white_index += 1
            continue
        boundary = white_index * white_key_width  # left edge of the next white key
        x0 = boundary - black_key_width // 2
        key_map[:black_key_height, x0 : x0 + black_key_width] = key
    return KeyboardLayout(
        key_map=key_map,
        pitches=pitches,
        rest_shade=np.where(black, black_up, white_up),
        pressed_shade=np.where(black, black_down, white_down),
        background=border,
    )


@lru_cache(maxsize=1)
def layout() -> KeyboardLayout:
    """The simulator's keyboard: 780x57, the picture every simulated video shows."""
    drawn = draw()
    assert drawn.shape == (HEIGHT, WIDTH)
    return drawn


def render(states: np.ndarray) -> np.ndarray:
    """Key states (88,) or (N, 88) bool -> frames (57, 780) or (N, 57, 780) uint8."""
    return layout().render(states)


def read_key_states(frames: np.ndarray) -> np.ndarray:
    """Frames (N, 57, 780) or (57, 780) uint8 -> key states (N, 88) / (88,) bool (see
    `KeyboardLayout.read_key_states`)."""
    return layout().read_key_states(frames)
