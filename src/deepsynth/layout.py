"""The keyboard layout: everything known about the picture of a keyboard (numpy only, no torch).

A layout is the frame size, the key (0..87, lowest first) that owns each pixel, each key's MIDI
pitch, its resting and its pressed shade, and the shade of the pixels no key owns (borders). It
renders key states as frames (a gather through the key map) and reads them back (the mean of each
key's own pixels, nearer its pressed or its resting shade). The simulator draws one
(`deepsynth.sim.keyboard.layout()`); a model holds the layout it was trained with and its
checkpoint stores it (`to_dict` / `from_dict`: plain values and bytes, as
`torch.load(weights_only=True)` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

N_KEYS = 88
LOWEST_PITCH = 21  # A0: the keys' MIDI pitches are LOWEST_PITCH .. LOWEST_PITCH + 87 (C8)
_BLACK_PITCH_CLASSES = frozenset({1, 3, 6, 8, 10})  # C#, D#, F#, G#, A#
_FIELDS = ("height", "width", "key_map", "pitches", "rest_shade", "pressed_shade", "background")


def is_black(pitch: int) -> bool:
    """Whether a MIDI pitch is a black key."""
    return int(pitch) % 12 in _BLACK_PITCH_CLASSES


def _exact(value: Any, dtype: type, name: str) -> np.ndarray:
    """`value` as a read-only array of `dtype`; ValueError if a value does not fit it."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"keyboard layout: {name} must hold integers, got dtype {arr.dtype}")
    out = arr.astype(dtype)
    if not np.array_equal(out, arr):
        raise ValueError(f"keyboard layout: {name} has values outside {np.dtype(dtype).name}")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class KeyboardLayout:
    """The picture of a keyboard of 88 keys.

    key_map: (H, W) int16, the key 0..87 that owns each pixel, -1 where none does.
    pitches: (88,) int64, each key's MIDI pitch.
    rest_shade, pressed_shade: (88,) uint8, each key's shade at rest and pressed.
    background: the shade of the pixels no key owns.

    The arrays are read-only copies; the layout is checked when built (`validate`). Two layouts
    are equal when all of these are.
    """

    key_map: np.ndarray
    pitches: np.ndarray
    rest_shade: np.ndarray
    pressed_shade: np.ndarray
    background: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "key_map", _exact(self.key_map, np.int16, "key_map"))
        set_(self, "pitches", _exact(self.pitches, np.int64, "pitches"))
        set_(self, "rest_shade", _exact(self.rest_shade, np.uint8, "rest_shade"))
        set_(self, "pressed_shade", _exact(self.pressed_shade, np.uint8, "pressed_shade"))
        if isinstance(self.background, bool) or not 0 <= int(self.background) <= 255 \
                or int(self.background) != self.background:
            raise ValueError(f"keyboard layout: background must be a shade 0..255, "
                             f"got {self.background!r}")
        set_(self, "background", int(self.background))
        self.validate()

    def validate(self) -> None:
        """ValueError unless: a 2-D key map of keys -1..87, 88 pitches (0..127) and shades, every
        key owning at least one pixel, every key's pressed shade unlike its resting shade."""
        if self.key_map.ndim != 2 or 0 in self.key_map.shape:
            raise ValueError(f"keyboard layout: key_map must be a 2-D (height, width) map, got "
                             f"shape {self.key_map.shape}")
        for name in ("pitches", "rest_shade", "pressed_shade"):
            if getattr(self, name).shape != (N_KEYS,):
                raise ValueError(f"keyboard layout: {name} must have shape ({N_KEYS},), got "
                                 f"{getattr(self, name).shape}")
        if self.key_map.min() < -1 or self.key_map.max() >= N_KEYS:
            raise ValueError(f"keyboard layout: key_map values must be -1 (no key) or 0.."
                             f"{N_KEYS - 1}")
        if self.pitches.min() < 0 or self.pitches.max() > 127:
            raise ValueError("keyboard layout: pitches must be MIDI pitches 0..127")
        missing = np.flatnonzero(self.counts == 0)
        if len(missing):
            raise ValueError(f"keyboard layout: keys {missing.tolist()} own no pixel")
        same = np.flatnonzero(self.rest_shade == self.pressed_shade)
        if len(same):
            raise ValueError(f"keyboard layout: keys {same.tolist()} look the same pressed "
                             f"and at rest")

    # --- what follows from the fields ---------------------------------------------------------

    @property
    def height(self) -> int:
        return int(self.key_map.shape[0])

    @property
    def width(self) -> int:
        return int(self.key_map.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """The frame size (height, width)."""
        return self.height, self.width

    @cached_property
    def counts(self) -> np.ndarray:
        """(88,) int64: the pixels each key owns."""
        owned = self.key_map[self.key_map >= 0].astype(np.int64)
        return np.bincount(owned, minlength=N_KEYS)[:N_KEYS]

    @cached_property
    def black(self) -> np.ndarray:
        """(88,) bool: which keys are black (by pitch)."""
        return _read_only(np.array([is_black(p) for p in self.pitches], dtype=bool))

    @cached_property
    def base(self) -> np.ndarray:
        """(H, W) uint8: the frame with no key pressed."""
        return self._picture(self.rest_shade)

    @cached_property
    def pressed(self) -> np.ndarray:
        """(H, W) uint8: the shade each pixel takes when its key is pressed."""
        return self._picture(self.pressed_shade)

    @property
    def masks(self) -> np.ndarray:
        """(88, H, W) bool: the pixels each key owns."""
        return self.key_map[None] == np.arange(N_KEYS, dtype=np.int16)[:, None, None]

    def _picture(self, shades: np.ndarray) -> np.ndarray:
        shade = np.append(shades, np.uint8(self.background))  # index -1: the background
        return _read_only(shade[self.key_map])

    @cached_property
    def _by_key(self) -> tuple[np.ndarray, np.ndarray]:
        """(the pixels keys own, key by key in pixel order; where each key's run starts)."""
        flat = self.key_map.reshape(-1)
        owned = np.flatnonzero(flat >= 0)
        order = owned[np.argsort(flat[owned], kind="stable")]
        starts = np.searchsorted(flat[order], np.arange(N_KEYS))
        return _read_only(order), _read_only(starts)

    # --- frames ---------------------------------------------------------------------------------

    def render(self, states: np.ndarray) -> np.ndarray:
        """Key states (88,) or (N, 88) bool -> frames (H, W) or (N, H, W) uint8."""
        states = np.asarray(states, dtype=bool)
        single = states.ndim == 1
        states = np.atleast_2d(states)
        if states.shape[-1] != N_KEYS:
            raise ValueError(f"key states must have {N_KEYS} columns, got shape {states.shape}")
        # column 88 is "no key" (borders): never pressed
        padded = np.concatenate([states, np.zeros((len(states), 1), dtype=bool)], axis=1)
        down = padded[:, self.key_map]  # (N, H, W) via the key map (-1 -> column 88)
        frames = np.where(down, self.pressed, self.base)
        return frames[0] if single else frames

    def key_means(self, frames: np.ndarray) -> np.ndarray:
        """Frames (N, H, W) or (H, W) -> (N, 88) / (88,) float64: the mean of each key's own
        pixels (integer frames summed exactly)."""
        frames = np.asarray(frames)
        single = frames.ndim == 2
        if frames.ndim < 2 or frames.shape[-2:] != self.shape:
            raise ValueError(f"frames must be {self.height}x{self.width}, got "
                             f"{frames.shape[-2:]}")
        order, starts = self._by_key
        flat = frames.reshape(-1, self.height * self.width)
        exact = np.int64 if np.issubdtype(flat.dtype, np.integer) else np.float64
        sums = np.add.reduceat(flat[:, order], starts, axis=1, dtype=exact)
        means = sums / self.counts
        return means[0] if single else means

    def read_key_states(self, frames: np.ndarray) -> np.ndarray:
        """Frames (N, H, W) or (H, W) uint8 -> key states (N, 88) / (88,) bool.

        Each key is pressed when the mean of its own pixels is nearer its pressed shade than its
        resting shade (exact on lossless frames, robust to mild compression noise).
        """
        means = self.key_means(frames)
        return np.abs(means - self.pressed_shade) < np.abs(means - self.rest_shade)

    def key_levels(self, frames: np.ndarray) -> np.ndarray:
        """Frames (N, H, W) or (H, W) -> (N, 88) / (88,) float32 levels: 0 at rest, 1 pressed
        (the mean of each key's own pixels, clipped to [0, 1]). The numbers of the model's
        `KeyFeatures.key_levels`, without torch: exact integer sums divided in float64 and
        rounded once (torch's float32 quotient), then the same float32 operations in the same
        order (tests/test_packed.py holds the two together)."""
        mean = self.key_means(frames).astype(np.float32)
        up = self.rest_shade.astype(np.float64).astype(np.float32)
        down = self.pressed_shade.astype(np.float64).astype(np.float32)
        return np.clip((mean - up) / (down - up), np.float32(0), np.float32(1))

    # --- storage and identity -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (ints, lists of ints, bytes): what a checkpoint stores."""
        return {
            "height": self.height,
            "width": self.width,
            "key_map": self.key_map.astype("<i2").tobytes(),
            "pitches": self.pitches.tolist(),
            "rest_shade": self.rest_shade.tolist(),
            "pressed_shade": self.pressed_shade.tolist(),
            "background": self.background,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyboardLayout:
        """The layout `to_dict` wrote; ValueError if `data` is not one."""
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"keyboard layout: expected the fields {list(_FIELDS)}, got {got}")
        height, width, raw = int(data["height"]), int(data["width"]), data["key_map"]
        if not isinstance(raw, bytes | bytearray) or len(raw) != 2 * height * width:
            raise ValueError(f"keyboard layout: key_map must be {2 * height * width} bytes "
                             f"(int16, {height}x{width})")
        key_map = np.frombuffer(bytes(raw), dtype="<i2").reshape(height, width)
        return cls(key_map, np.asarray(data["pitches"]), np.asarray(data["rest_shade"]),
                   np.asarray(data["pressed_shade"]), data["background"])

    @cached_property
    def _identity(self) -> tuple:
        return (self.shape, self.key_map.tobytes(), self.pitches.tobytes(),
                self.rest_shade.tobytes(), self.pressed_shade.tobytes(), self.background)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyboardLayout):
            return NotImplemented
        return self is other or self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    def __repr__(self) -> str:
        return (f"KeyboardLayout({self.width}x{self.height}, pitches {self.pitches[0]}.."
                f"{self.pitches[-1]}, {int(self.black.sum())} black keys)")

    def __copy__(self) -> KeyboardLayout:
        return self  # immutable

    def __deepcopy__(self, memo: dict) -> KeyboardLayout:
        return self


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
