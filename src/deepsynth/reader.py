"""The key reader: finds an 88-key keyboard in a video's frames and reads its keys.

Calibrated per video by classical image processing (the keyboard's known pattern is enough):

1. Two pictures from frames sampled over the video: per pixel a high percentile (the white keys
   at rest: a pressed white key is darker) and a low one (the black keys at rest: a pressed
   black key is lighter), so keys held for much of the piece do not hide.
2. Where the keyboard is: the largest bright region (the white keys, closed over the gaps
   between them); its four extreme corners give a projective map from the keyboard's canvas
   (the 780x57 drawing: 52 white keys of 15 units) to the frame. The map is then refined along
   the keyboard from the 51 dark lines between white keys (least squares).
3. Its keys: the 36 black keys are the dark runs across the upper band of the rectified rest
   picture (anything else is "no 88-key keyboard found"); their bottom edge is measured; each
   key is then sampled on a small grid inside its own area (white keys below the black ones),
   mapped to the frame with bilinear taps.
4. Each key's rest shade and pressed change: from the key's values over the whole video. The
   press direction (darker or lighter) is found per colour; a key held for the whole video is
   recognised because its rest shade differs from its neighbours'.

`Calibration.levels` reads 0 (rest) .. 1 (pressed) per key and frame, `states` thresholds them
at 0.5, and `layout()` gives the keyboard layout object (deepsynth.layout) of the video's frame
size, the same object the simulator's drawing produces (exactly so on the simulator's video).

`read_video_keys` reads a video in one decoding pass: the frames for the rest pictures are kept
as they stream by (`FrameSample`), and so are every frame's rows around the keyboard; the key
values are read from those once calibrated. The percentile pictures come from a sorting network
over per-pixel minima and maxima, and the closing of the bright region from run lengths: the
same values as np.partition and ndimage.binary_closing, several times faster.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.layout import LOWEST_PITCH, N_KEYS, KeyboardLayout, is_black

CANVAS_W, CANVAS_H, WHITE = 780.0, 57.0, 15.0  # the keyboard's canvas, in white-key units x 15
PITCHES = np.arange(LOWEST_PITCH, LOWEST_PITCH + N_KEYS)
BLACK = np.array([is_black(p) for p in PITCHES])
WHITE_KEYS = np.flatnonzero(~BLACK)  # key index of the k-th white key
BLACK_KEYS = np.flatnonzero(BLACK)
# the canvas x of the boundary each black key sits on (the left edge of the next white key)
BLACK_BOUNDARY = np.array([WHITE * np.count_nonzero(~BLACK[:k]) for k in BLACK_KEYS])
GRID = 4  # sample points per key along each axis


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking the four points `src` (4, 2) to `dst` (4, 2)."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows, np.float64))
    h = vt[-1].reshape(3, 3)
    return h / h[2, 2]


def apply_homography(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points (..., 2) through the projective map h."""
    p = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1) @ h.T
    return p[..., :2] / p[..., 2:3]


CANVAS = np.array([[0.0, 0.0], [CANVAS_W, 0.0], [CANVAS_W, CANVAS_H], [0.0, CANVAS_H]])


def _taps(shape: tuple[int, int], xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps (flat indices, weights), both (..., 4), of pixel-edge points `xy`."""
    H, W = shape
    x = np.clip(xy[..., 0] - 0.5, 0, W - 1)
    y = np.clip(xy[..., 1] - 0.5, 0, H - 1)
    x0 = np.minimum(np.floor(x), max(W - 2, 0)).astype(np.int64)
    y0 = np.minimum(np.floor(y), max(H - 2, 0)).astype(np.int64)
    fx, fy = x - x0, y - y0
    base = y0 * W + x0
    idx = np.stack([base, base + 1, base + W, base + W + 1], axis=-1)
    w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
    return np.minimum(idx, H * W - 1), w


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    idx, w = _taps(image.shape, xy)
    return (image.reshape(-1)[idx] * w).sum(axis=-1)


def _otsu(image: np.ndarray) -> float:
    if image.dtype == np.uint8:  # the same counts as the histogram, without its binning
        hist = np.bincount(image.reshape(-1), minlength=256)
    else:
        hist, _ = np.histogram(image, bins=256, range=(0, 256))
    p = hist / max(hist.sum(), 1)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(int(np.argmax(between)) + 1)  # the upper edge of the bin


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _crossing(profile: np.ndarray, i: int, threshold: float, step: float) -> float:
    """Sub-sample position between samples i - 1 and i where `profile` crosses `threshold`."""
    a, b = profile[i - 1], profile[i]
    t = 0.5 if a == b else (threshold - a) / (b - a)
    return (i - 1 + float(np.clip(t, 0, 1))) * step


def no_keyboard(where: str) -> DeepSynthError:
    return DeepSynthError(f"no 88-key keyboard found in {where}")


@dataclass
class Calibration:
    """Where the keys of one video are and what they look like at rest and pressed."""

    shape: tuple[int, int]  # frame height, width
    to_frame: np.ndarray  # (3, 3) canvas (pixel-edge) -> frame (pixel-edge) coordinates
    black_spans: np.ndarray  # (36, 2) canvas x of each black key's left and right edge
    black_bottom: float  # canvas y of the black keys' lower edge
    background: float  # shade around the keyboard
    taps: np.ndarray = field(repr=False)  # (88, GRID * GRID * 4) flat pixel indices
    weights: np.ndarray = field(repr=False)  # same shape, summing to 1 per key
    rest: np.ndarray | None = None  # (88,) each key's value at rest
    change: np.ndarray | None = None  # (88,) pressed value - rest value (signed)
    warnings: list[str] = field(default_factory=list)

    def values(self, frames: np.ndarray) -> np.ndarray:
        """Frames (N, H, W) -> each key's mean over its sample grid (N, 88) float32."""
        flat = np.asarray(frames).reshape(len(frames), -1)
        return np.einsum("nkt,kt->nk", flat[:, self.taps].astype(np.float32), self.weights)

    def levels(self, frames: np.ndarray) -> np.ndarray:
        """(N, 88) in [0, 1]: 0 at the key's rest shade, 1 at its pressed shade."""
        return self.levels_of(self.values(frames))

    def levels_of(self, values: np.ndarray) -> np.ndarray:
        """Key values (N, 88) (from `values`) -> levels (N, 88) in [0, 1]."""
        if self.rest is None or self.change is None:
            raise ValueError("shades not fitted: call fit_shades with the video's key values")
        return np.clip((values - self.rest) / self.change, 0.0, 1.0)

    def states(self, frames: np.ndarray) -> np.ndarray:
        return self.levels(frames) > 0.5

    def states_of(self, values: np.ndarray) -> np.ndarray:
        return self.levels_of(values) > 0.5

    def fit_shades(self, values: np.ndarray) -> None:
        """Each key's rest shade and pressed change from its values over the video (T, 88)."""
        values = np.asarray(values, np.float64)
        median = np.median(values, axis=0)
        dev = values - median
        noise = 1.4826 * np.median(np.abs(dev - np.median(dev, axis=0)), axis=0)
        sigma = max(float(np.median(noise)), 0.5)
        rest, change = median.copy(), np.zeros(N_KEYS)
        for colour in (~BLACK, BLACK):
            # each key against the typical value of its neighbourhood (most keys are up at any
            # moment, even where one key is held for most of the piece)
            med = median[colour]
            local = np.array([np.median(med[max(0, i - 3) : i + 4]) for i in range(len(med))])
            d = values[:, colour] - local
            extreme = max(float(d.max()), float(-d.min()))
            if extreme < max(8 * sigma, 10.0):  # no key of this colour ever pressed
                change[colour] = np.nan
                continue
            # presses: the largest changes (compression ripple next to a pressed key is small)
            sign = 1.0 if d.max() >= -d.min() else -1.0
            big = sign * d[sign * d > max(8 * sigma, 0.4 * extreme)]
            # rest: the side away from the presses (robust to keys held for long)
            q = 5 if sign > 0 else 95
            r = np.percentile(values[:, colour], q, axis=0)
            step = float(np.median(big))
            # a key held for the whole video: its rest shade stands out from its neighbours'
            keys = np.flatnonzero(colour)
            for i in range(len(keys)):
                neighbours = np.r_[r[max(0, i - 3) : i], r[i + 1 : i + 4]]
                if len(neighbours) and abs(r[i] - np.median(neighbours)) > 0.5 * step:
                    r[i] = np.median(neighbours)
            rest[colour] = r
            d = sign * (values[:, colour] - r)
            per_key = np.array([np.median(d[d[:, j] > 0.5 * step, j]) if
                                np.any(d[:, j] > 0.5 * step) else step
                                for j in range(len(keys))])
            change[colour] = sign * per_key
        if np.all(np.isnan(change)):
            self.warnings.append("no key is ever pressed in the video")
        filler = np.nanmedian(np.abs(change)) if not np.all(np.isnan(change)) else 64.0
        change = np.where(np.isnan(change), np.where(BLACK, 1.0, -1.0) * filler, change)
        self.rest, self.change = rest, change

    def check_reading(self, states: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Warnings for a reading that looks wrong: many keys held for most of the piece."""
        w = np.ones(len(states)) if weights is None else np.asarray(weights, np.float64)
        held = (states * w[:, None]).sum(0) / max(w.sum(), 1e-9)
        many = int(np.count_nonzero(held > 0.8))
        if many >= 8:
            self.warnings.append(f"{many} keys read as held for most of the piece: the video may "
                                 f"not show a keyboard the reader understands")

    def layout(self) -> KeyboardLayout:
        """The keyboard layout of this video's frames: the key owning each pixel (-1 between
        white keys and off the keyboard), each key's rest and pressed shade."""
        if self.rest is None or self.change is None:
            raise ValueError("shades not fitted: call fit_shades first")
        H, W = self.shape
        ys, xs = np.mgrid[0:H, 0:W]
        uv = apply_homography(np.linalg.inv(self.to_frame), np.stack([xs + 0.5, ys + 0.5], -1))
        u, v = uv[..., 0], uv[..., 1]
        on = (u >= 0) & (u < CANVAS_W) & (v >= 0) & (v < CANVAS_H)
        white = np.clip(np.floor(u / WHITE).astype(np.int64), 0, 51)
        key_map = np.where(on & (u - white * WHITE >= 1.0), WHITE_KEYS[white], -1)
        for key, (a, b) in zip(BLACK_KEYS, self.black_spans, strict=True):
            key_map[on & (u >= a) & (u < b) & (v < self.black_bottom)] = key
        rest = np.clip(np.rint(self.rest), 0, 255)
        pressed = np.clip(np.rint(self.rest + self.change), 0, 255)
        pressed = np.where(pressed == rest, np.where(rest < 128, rest + 1, rest - 1), pressed)
        return KeyboardLayout(key_map=key_map.astype(np.int16), pitches=PITCHES,
                              rest_shade=rest.astype(np.uint8),
                              pressed_shade=pressed.astype(np.uint8),
                              background=int(np.clip(np.rint(self.background), 0, 255)))


def calibrate(pictures: tuple[np.ndarray, np.ndarray], where: str = "the video") -> Calibration:
    """The keyboard's place and keys from its (bright, dark) pictures (`rest_pictures`);
    DeepSynthError "no 88-key keyboard found in WHERE" when there is none."""
    from scipy import ndimage

    R = np.asarray(pictures[0], np.float32)
    D = np.asarray(pictures[1], np.float32)
    if R.shape != D.shape or R.ndim != 2:
        raise ValueError("two pictures of the same size expected")
    H, W = R.shape
    if H < 16 or W < 200:
        raise no_keyboard(where)
    bright_picture = np.asarray(pictures[0])
    threshold = _otsu(bright_picture if bright_picture.dtype == np.uint8 else R)
    bright = threshold < R
    k = max(1, round(W / 90))  # closes gaps up to a white key wide (a key held throughout)
    bright = _close_rows(bright, k)
    labels, n = ndimage.label(bright)
    if n == 0:
        raise no_keyboard(where)
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    if xs.max() - xs.min() < 0.25 * W or len(xs) < 0.002 * H * W:
        raise no_keyboard(where)
    to_frame = homography(CANVAS, _corners(xs, ys))
    to_frame = _refine_along(R, to_frame, where)
    spans, bottom, level_white, level_black = _black_keys(R, D, to_frame, where)
    taps, weights = _key_taps(R.shape, to_frame, spans, bottom)
    outside = np.ones_like(R, bool)
    outside[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = False
    background = float(np.median(R[outside])) if outside.any() else float(level_black)
    return Calibration((H, W), to_frame, spans, bottom, background, taps, weights)


def _edge_line(along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(slope, intercept) of across = slope x along + intercept, fitted to the middle 80 % of
    the edge (its ends round off) after dropping points far from a first fit (a black key
    cutting into the top edge, a bright spot beside the keyboard)."""
    lo, hi = np.percentile(along, [10, 90])
    keep = (along >= lo) & (along <= hi)
    a, x = along[keep].astype(np.float64), across[keep].astype(np.float64)
    line = np.polyfit(a, x, 1)
    near = np.abs(np.polyval(line, a) - x) <= max(1.0, np.percentile(np.abs(np.polyval(line, a)
                                                                            - x), 75))
    return np.polyfit(a[near], x[near], 1) if near.sum() >= 2 else line


def _corners(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The keyboard's TL, TR, BR, BL corners (pixel edges) from the pixels of its bright region:
    the intersections of lines fitted to its four edges, so that every column and row of the
    edges counts (a corner's own pixels are few, and blur rounds them off). The extreme pixels
    where an edge is too short to fit."""
    s, d = xs + ys, xs - ys
    extreme = np.array([[xs[s.argmin()], ys[s.argmin()]], [xs[d.argmax()] + 1, ys[d.argmax()]],
                        [xs[s.argmax()] + 1, ys[s.argmax()] + 1],
                        [xs[d.argmin()], ys[d.argmin()] + 1]], np.float64)
    cols, rows = np.unique(xs), np.unique(ys)
    if len(cols) < 20 or len(rows) < 8:
        return extreme
    top = np.full(xs.max() + 1, np.iinfo(np.int64).max)
    bottom = np.full(xs.max() + 1, -1)
    np.minimum.at(top, xs, ys)
    np.maximum.at(bottom, xs, ys)
    left = np.full(ys.max() + 1, np.iinfo(np.int64).max)
    right = np.full(ys.max() + 1, -1)
    np.minimum.at(left, ys, xs)
    np.maximum.at(right, ys, xs)
    (mt, ct), (mb, cb) = _edge_line(cols, top[cols]), _edge_line(cols, bottom[cols] + 1)

    def side(x: float) -> np.ndarray:  # the rows of the end at column x, between the edges
        y0, y1 = mt * x + ct, mb * x + cb
        return rows[(rows >= y0 + 1) & (rows + 1 <= y1 - 1)]

    ends = side(float(xs.min())), side(float(xs.max()))
    if min(len(e) for e in ends) < 4:
        return extreme
    (ml, cl), (mr, cr) = _edge_line(ends[0], left[ends[0]]), \
        _edge_line(ends[1], right[ends[1]] + 1)

    def meet(m_h, c_h, m_v, c_v):  # y = m_h x + c_h and x = m_v y + c_v
        y = (m_h * c_v + c_h) / (1 - m_h * m_v)
        return [m_v * y + c_v, y]

    corners = np.array([meet(mt, ct, ml, cl), meet(mt, ct, mr, cr), meet(mb, cb, mr, cr),
                        meet(mb, cb, ml, cl)], np.float64)
    if not np.all(np.isfinite(corners)) or np.abs(corners - extreme).max() > 0.1 * (
            xs.max() - xs.min()):
        return extreme
    return corners


def _band(to_frame: np.ndarray, u: np.ndarray, v0: float, v1: float, rows: int = 6):
    """Frame points of canvas columns u over `rows` canvas rows in [v0, v1]."""
    vs = np.linspace(v0, v1, rows)
    uv = np.stack(np.broadcast_arrays(u[None, :], vs[:, None]), axis=-1)
    return apply_homography(to_frame, uv)


def _refine_along(R: np.ndarray, to_frame: np.ndarray, where: str) -> np.ndarray:
    """Correct the map along the keyboard from the lines between white keys: canvas line k is
    at 15 k + 0.5 (the centre of the 1-unit gap); fit observed = a * true + c."""
    step = 0.25
    u = np.arange(0, CANVAS_W, step)
    profile = _sample(R, _band(to_frame, u, 0.78 * CANVAS_H, 0.95 * CANVAS_H)).mean(axis=0)
    true, seen = [], []
    for k in range(1, 52):
        centre = k * WHITE + 0.5
        lo, hi = int((centre - 5) / step), int((centre + 5) / step)
        window = profile[lo:hi]
        i = int(np.argmin(window))
        depth = np.median(window) - window[i]
        if 0 < i < len(window) - 1 and depth > 8:
            a, b, c = window[i - 1], window[i], window[i + 1]
            off = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
            true.append(centre)
            seen.append((lo + i + off) * step)
    if len(true) < 20:  # lines too fine to see (a small or blurred picture): the corners'
        return to_frame  # map stands (the black keys are then found by their pattern)
    a, c = np.polyfit(true, seen, 1)
    if np.abs(np.polyval([a, c], true) - seen).max() > 0.2 * WHITE:
        return to_frame  # what was seen is not the lines between white keys
    return to_frame @ np.array([[a, 0, c], [0, 1, 0], [0, 0, 1]])


def _black_keys(R: np.ndarray, D: np.ndarray, to_frame: np.ndarray, where: str):
    """(36, 2) spans, bottom edge, white and black levels of the black keys: dark runs across
    the upper band of the dark picture D (a pressed white key is still far lighter than a black
    one at rest; the threshold sits a third of the way up from black)."""
    step = 0.25
    u = np.arange(0, CANVAS_W, step)
    top = _sample(D, _band(to_frame, u, 0.15 * CANVAS_H, 0.4 * CANVAS_H)).mean(axis=0)
    low = _sample(R, _band(to_frame, u, 0.8 * CANVAS_H, 0.95 * CANVAS_H)).mean(axis=0)
    level_white = float(np.median(low))
    level_black = float(np.percentile(top, 5))
    if level_white - level_black < 30:
        raise no_keyboard(where)
    threshold = level_black + 0.35 * (level_white - level_black)
    dark = top < threshold
    runs = [(a, b) for a, b in _runs(dark) if (b - a) * step >= 2.0 and a > 0 and b < len(top)]
    found = np.array([[_crossing(top, a, threshold, step), _crossing(top, b, threshold, step)]
                      for a, b in runs]).reshape(-1, 2)
    spans = None
    if len(found) >= len(BLACK_KEYS):
        # each black key: the dark run nearest the boundary it sits on (edges and dirt are not)
        nearest = np.abs(found.mean(axis=1)[None, :] - BLACK_BOUNDARY[:, None]).argmin(axis=1)
        spans = found[nearest]
        if len(set(nearest.tolist())) < len(BLACK_KEYS) or \
                np.abs(spans.mean(axis=1) - BLACK_BOUNDARY).max() > 0.4 * WHITE:
            spans = None
    if spans is None:  # keys too small or blurred for their runs to part: their pattern
        a, c, w = _fit_black_pattern(top, step, level_black, level_white, where)
        spans = np.stack([a * BLACK_BOUNDARY + c - w / 2, a * BLACK_BOUNDARY + c + w / 2], 1)
    vstep = 0.25
    v = np.arange(0, CANVAS_H, vstep)
    bottoms = []
    for left, right in spans:  # off the centre: the line between white keys runs below it
        c = left + 0.3 * (right - left)
        col = _sample(D, apply_homography(to_frame, np.stack([np.full_like(v, c), v], -1)))
        below = np.flatnonzero(col >= threshold)
        first = below[below > 4 / vstep]
        if len(first):
            bottoms.append(_crossing(col, int(first[0]), threshold, vstep))
    if not bottoms:
        raise no_keyboard(where)
    return spans, float(np.median(bottoms)), level_white, level_black


def _fit_black_pattern(top: np.ndarray, step: float, black: float, white: float,
                       where: str) -> tuple[float, float, float]:
    """(a, c, width): the black keys at canvas u = a x boundary + c, from the profile `top`
    across their band (canvas columns every `step`), for pictures too small or blurred for
    their dark runs to part: the pattern of 36 keys of one width, stretched and shifted along
    the keyboard, that is darkest inside nearly every key against the 3 units beside it;
    "no 88-key keyboard" unless that contrast is clear."""
    dark = np.clip((white - top) / max(white - black, 1e-6), 0, 1)
    cum = np.r_[0.0, np.cumsum(dark)]

    def mean(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        i = np.clip(np.rint(lo / step), 0, len(dark)).astype(np.int64)
        j = np.clip(np.rint(hi / step), 0, len(dark)).astype(np.int64)
        return (cum[j] - cum[i]) / np.maximum(j - i, 1)

    a = np.linspace(0.98, 1.02, 17)[:, None, None]
    c = np.arange(-5.0, 5.25, 0.25)[None, :, None]
    centre = a * BLACK_BOUNDARY[None, None, :] + c
    best = (-np.inf, 1.0, 0.0, 0.0)
    for w in np.arange(5.0, 14.5, 0.5):
        inside = mean(centre - w / 2, centre + w / 2)
        beside = 0.5 * (mean(centre - w / 2 - 3, centre - w / 2)
                        + mean(centre + w / 2, centre + w / 2 + 3))
        score = np.percentile(inside - beside, 10, axis=2)
        k = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[k] > best[0]:
            best = (float(score[k]), float(a[k[0], 0, 0]), float(c[0, k[1], 0]), float(w))
    if best[0] < 0.2:
        raise no_keyboard(where)
    return best[1:]


def _key_taps(shape, to_frame, spans, bottom):
    """Each key's sample grid (canvas) -> bilinear taps in the frame, (88, GRID^2 * 4)."""
    g = (np.arange(GRID) + 0.5) / GRID
    boxes = np.zeros((N_KEYS, 4))  # u0, u1, v0, v1
    for i, key in enumerate(WHITE_KEYS):
        boxes[key] = [i * WHITE + 4, i * WHITE + 11,
                      bottom + 0.3 * (CANVAS_H - bottom), CANVAS_H - 0.15 * (CANVAS_H - bottom)]
    for key, (a, b) in zip(BLACK_KEYS, spans, strict=True):
        w = b - a
        boxes[key] = [a + 0.25 * w, b - 0.25 * w, 0.2 * bottom, 0.8 * bottom]
    us = boxes[:, :1] + (boxes[:, 1:2] - boxes[:, :1]) * g[None, :]  # (88, GRID)
    vs = boxes[:, 2:3] + (boxes[:, 3:4] - boxes[:, 2:3]) * g[None, :]
    uv = np.stack(np.broadcast_arrays(us[:, None, :], vs[:, :, None]), -1).reshape(N_KEYS, -1, 2)
    idx, w = _taps(shape, apply_homography(to_frame, uv))
    return idx.reshape(N_KEYS, -1), (w / (GRID * GRID)).reshape(N_KEYS, -1).astype(np.float32)


def frame_period(starts: np.ndarray) -> int | None:
    """The frame period in samples of a constant-rate video (its frames' start samples, equal
    consecutive frames merged, so gaps are whole periods), or None for frames at irregular
    times (a frame per key change)."""
    gaps = np.diff(np.asarray(starts, np.int64))
    if len(gaps) < 4 or gaps.min() < 2:
        return None
    rough = float(np.percentile(gaps, 5))
    periods = np.maximum(np.round(gaps / rough), 1)
    period = gaps.sum() / periods.sum()  # fractional: pts are rounded to whole samples
    off = np.abs(gaps - periods * period)
    return int(round(period)) if np.mean(off <= 1.5) >= 0.95 else None


def midpoint_times(starts: np.ndarray, period: int) -> np.ndarray:
    """A change first seen in a frame happened since the frame before: date it half a period
    earlier (the middle of that interval), keeping the first frame at 0 and the order."""
    out = np.asarray(starts, np.int64).copy()
    out[1:] -= period // 2
    return np.maximum.accumulate(np.maximum(out, np.arange(len(out))))


CHUNK = 256  # frames per buffer of rows


def read_video_keys(path: str | os.PathLike, sample_rate: int | None = None,
                    budget: int = 512 << 20):
    """`deepsynth.sim.video.read_keys` on a video that is not the simulator's picture, in one
    decoding pass: as the frames stream by, the frames for the rest pictures are kept
    (`FrameSample`) and every frame's rows around the keyboard (found on the first frame) are
    buffered, up to `budget` bytes; the calibration then reads the key values of the buffered
    rows. Frames past the budget, or a keyboard whose keys lie outside the rows buffered (it
    is not where the first frame shows it), are read on a second pass. The same key states as
    reading every frame after calibrating (DeepSynthError "no 88-key keyboard found in PATH"
    when there is none)."""
    from deepsynth.sim.keystates import changes_from_states
    from deepsynth.sim.video import KeyReading, iter_frames, piece_length, video_info

    info = video_info(path, sample_rate)
    sample = FrameSample()
    starts: list[int] = []
    chunks: list[np.ndarray] = []  # (CHUNK, rows, W) uint8: the rows buffered, frame by frame
    rows = (0, 0)
    room, buffered = True, 0
    for start, img in iter_frames(path, sample_rate, merge=False):
        if not starts:
            rows = _keyboard_rows(img)
            per_frame = (rows[1] - rows[0]) * img.shape[1]
            capacity = budget // max(per_frame, 1)
            room = capacity > 0
        sample.add(img)
        n = len(starts)
        if room and n < capacity:
            if n % CHUNK == 0:
                chunks.append(np.empty((CHUNK, rows[1] - rows[0], img.shape[1]), np.uint8))
            chunks[-1][n % CHUNK] = img[rows[0]:rows[1]]
            buffered += 1
        else:
            room = False
        starts.append(start)
    if not starts:
        raise DeepSynthError(f"{path}: video has no frames")
    cal = calibrate(sample.pictures(), str(path))
    sample = None  # the frames kept for the rest pictures: not needed any more
    W = cal.shape[1]
    tap_rows = cal.taps // W
    if tap_rows.min() < rows[0] or tap_rows.max() >= rows[1]:
        buffered = 0  # the keyboard is not where the first frame showed it
    values = np.empty((len(starts), N_KEYS), np.float32)
    taps = cal.taps - rows[0] * W
    for c, chunk in enumerate(chunks):
        lo, hi = c * CHUNK, min(buffered, (c + 1) * CHUNK)
        if hi > lo:
            values[lo:hi] = _gather(chunk[: hi - lo].reshape(hi - lo, -1), taps, cal.weights)
    chunks.clear()
    if buffered < len(starts):  # the rest on a second pass
        tap_cols = cal.taps % W
        batch: list[np.ndarray] = []
        done = buffered
        for i, (_, img) in enumerate(iter_frames(path, sample_rate, merge=False)):
            if i >= buffered:
                batch.append(img[tap_rows, tap_cols])
            if len(batch) == CHUNK or (batch and i == len(starts) - 1):
                values[done:done + len(batch)] = _weigh(np.stack(batch), cal.weights)
                done += len(batch)
                batch = []
            if i == len(starts) - 1:
                break
    cal.fit_shades(values)
    states = cal.states_of(values)
    starts_a = np.asarray(starts, np.int64) - starts[0]
    n = piece_length(info, starts_a)
    period = frame_period(starts_a)
    if period is not None:  # a camera's constant rate: each change dated mid-interval
        starts_a = midpoint_times(starts_a, period)
    changes = changes_from_states(starts_a, states, info.sample_rate, max(n, starts_a[-1] + 1))
    cal.check_reading(changes.states, np.diff(np.r_[changes.starts, changes.n_samples]))
    return KeyReading(changes, cal.layout, tuple(cal.warnings))



def _keyboard_rows(img: np.ndarray) -> tuple[int, int]:
    """[first, last) rows of a frame to keep for reading its keys: the rows where at least a
    fifth of the pixels are bright (the keyboard's white keys), with half their height as
    margin on either side (tilt, perspective); all rows when none is bright."""
    H, W = img.shape
    bright = np.count_nonzero(img > _otsu(img[::4, ::4]), axis=1) >= 0.2 * W
    if not bright.any():
        return 0, H
    first, last = (int(i) for i in np.flatnonzero(bright)[[0, -1]])
    margin = max(8, (last + 1 - first) // 2)
    return max(0, first - margin), min(H, last + 1 + margin)


def _gather(flat: np.ndarray, taps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _weigh(flat[:, taps], weights)


def _weigh(tapped: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Tapped pixels (N, 88, T) -> key values (N, 88) float32, as `Calibration.values`."""
    return np.einsum("nkt,kt->nk", tapped.astype(np.float32), weights)


class FrameSample:
    """Up to `keep` frames spread evenly over a stream of frames (fewer for big frames: at most
    `budget` pixels in all), kept as they stream by: every frame while there is room, then every
    second one, every fourth... (`rest_pictures` of the frames seen so far)."""

    def __init__(self, keep: int = 48, budget: int = 50_000_000) -> None:
        self.keep, self.budget = keep, budget
        self.kept: list[np.ndarray] = []
        self.seen, self.stride = 0, 1

    def add(self, frame: np.ndarray) -> None:
        if self.seen == 0:
            self.keep = int(np.clip(self.budget // max(np.asarray(frame).size, 1), 8, self.keep))
        if self.seen % self.stride == 0:
            self.kept.append(np.array(frame, np.uint8))  # a copy: frames may be reused views
            if len(self.kept) == 2 * self.keep:
                self.kept, self.stride = self.kept[::2], self.stride * 2
        self.seen += 1

    def pictures(self) -> tuple[np.ndarray, np.ndarray]:
        """(bright, dark): the per-pixel 90th and 10th percentiles of the frames kept."""
        if not self.kept:
            raise DeepSynthError("no frames to calibrate on")
        chosen = self.kept[:: max(1, len(self.kept) // self.keep)]
        n = len(chosen) - 1
        hi, lo = int(round(0.9 * n)), int(round(0.1 * n))
        bright, dark = _order_statistics(chosen, (hi, lo))
        return bright, dark


def rest_pictures(frames: Iterable[np.ndarray], keep: int = 48,
                  budget: int = 50_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark): the per-pixel 90th and 10th percentiles of up to `keep` frames spread
    evenly over `frames` (fewer for big frames: at most `budget` pixels in all)."""
    sample = FrameSample(keep, budget)
    for frame in frames:
        sample.add(frame)
    return sample.pictures()


def _merge_sort_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort of n wires (n a power of 2): comparators (i < j), in order;
    after them wire i holds the i-th smallest value."""
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _order_statistics(frames: list[np.ndarray], ranks: tuple[int, ...],
                      block: int = 1 << 15) -> list[np.ndarray]:
    """The per-pixel `ranks`-th smallest values (0-based) of `frames` (same shape, uint8; they
    are overwritten): a sorting network cut down to the comparators those ranks depend on,
    run as per-pixel minima and maxima over blocks of pixels (exactly np.partition's values,
    several times faster: partitioning a few dozen values per pixel is mostly overhead)."""
    n = len(frames)
    size = 1 << max(n - 1, 0).bit_length()
    needed, network = set(ranks), []
    for i, j in reversed(_merge_sort_network(size)):  # keep what the ranks asked for depend on
        if (i in needed or j in needed) and i < n:  # wire j >= n: +inf padding, i keeps its own
            network.append((i, j))
            needed |= {i, j}
    network.reverse()
    shape = frames[0].shape
    flat = [np.ascontiguousarray(f).reshape(-1) for f in frames]
    out = [np.empty(flat[0].size, np.uint8) for _ in ranks]
    tmp = np.empty(block, np.uint8)
    for start in range(0, flat[0].size, block):
        wires: list[np.ndarray | None] = [f[start:start + block] for f in flat]
        wires += [None] * (size - n)
        t = tmp[: len(wires[0])]
        for i, j in network:
            a, b = wires[i], wires[j]
            if b is None:
                continue
            if a is None:  # +inf against a value: the value moves down
                wires[i], wires[j] = b, None
                continue
            np.minimum(a, b, out=t)
            np.maximum(a, b, out=b)
            wires[i], t = t, a
        for o, r in zip(out, ranks, strict=True):
            o[start:start + block] = wires[r]
    return [o.reshape(shape) for o in out]


def _close_rows(mask: np.ndarray, k: int) -> np.ndarray:
    """`mask` with every run of False along a row that is at most 2k long and has True on both
    sides filled, except within k pixels of the row's ends: a binary closing by a 1 x (2k + 1)
    line with a zero border, or'd with the mask (exactly ndimage.binary_closing's result, far
    faster for long lines on big pictures)."""
    H, W = mask.shape
    idx = np.broadcast_to(np.arange(W, dtype=np.int32), (H, W))
    left = np.maximum.accumulate(np.where(mask, idx, -1), axis=1)  # last True at or before
    right = np.minimum.accumulate(np.where(mask, idx, W)[:, ::-1], axis=1)[:, ::-1]
    inside = (idx >= k) & (idx < W - k)  # the erosion's zero border reaches k pixels in
    return mask | ((left >= 0) & (right < W) & (right - left <= 2 * k + 1) & inside)
