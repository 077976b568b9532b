"""The torch Dataset of training segments, read from a built store (see store.py, segments.py).

An item is one segment of one song (segments.py gives the formula): the window of `window`
samples plus `context` samples of left context before it, T = context + window samples in all.
The loss covers samples [loss_start, T) with loss_start = context; the context lets a model with a
receptive field of `context` samples see a full past for every loss sample. Before the first
sample of a song the context is silence (audio 0) and the empty keyboard (no key pressed).

Item (a dict):
    frames       uint8 (N, 57, 780): the distinct keyboard pictures the item shows, in order of
                 first appearance (absent when render_frames=False)
    states       bool (N, 88): the key states the frames are drawn from (the simulator's
                 keyboard layout, sim.keyboard.layout().render)
    frame_index  int64 (V + T + L,): row of `frames` shown at each sample of the item's video,
                 which starts V = video_context samples before the audio and runs L = lookahead
                 samples past it (both 0 by default: then one column per audio sample)
    frame_starts int64 (N,): first column of frame_index at which each frame is shown, so
                 frame_starts[frame_index[c]] <= c: no column reads a frame from its future
    audio        float32 (T,) in [-1, 1] (the model's output distribution makes its classes)
    loss_start   int (= context); song (id), segment (k), start (song sample of loss_start)

Camera mix (`camera_mix` > 0): that share of the items, chosen by a hash of (camera_seed, song,
segment), shows the keys as the key reader reads them from a camera video of the song at one of
CAMERA_RATES fps (also hashed): frame-rate quantised, re-strikes lifted for a frame, every change
dated mid-interval (`sim.camera.camera_reading`), beside the same ground-truth audio; item
"camera_fps" says which (0: the exact key states). A model trained on the mix plays what a camera
shows as well as the simulator's own timing.

Identical pictures inside one item are stored once, so a model runs its frame CNN once per
distinct picture; `collate` concatenates the frames of a batch and offsets frame_index to match.
Songs are memory-mapped on demand (a few at a time), never the whole corpus in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from deepsynth.audio import INT16_SCALE
from deepsynth.config import AudioConfig, from_dict
from deepsynth.data import store
from deepsynth.data.segments import SegmentConfig, n_segments
from deepsynth.data.splits import SPLITS
from deepsynth.errors import DeepSynthError
from deepsynth.layout import KeyboardLayout
from deepsynth.sim import keyboard
from deepsynth.sim.camera import CAMERA_RATES, camera_reading


def shown_rows(starts: np.ndarray, packed_states: np.ndarray, n_samples: int, vlo: int,
               vhi: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The key-change rows a song shows over its samples [vlo, vhi): the empty keyboard before
    sample 0, its last state after its end. Returns (r0, packed, row_start): the song's first
    row shown, the packed states of the rows shown (a zero row first if vlo < 0) and the first
    column (sample - vlo) at which each is shown."""
    v0 = max(vlo, 0)
    last = min(vhi, n_samples) - 1
    # row r is shown on [starts[r], starts[r + 1])
    r0 = int(np.searchsorted(starts, v0, side="right")) - 1
    r1 = int(np.searchsorted(starts, last, side="right")) - 1
    packed = np.asarray(packed_states[r0 : r1 + 1])
    row_start = np.maximum(np.asarray(starts[r0 : r1 + 1], dtype=np.int64), v0) - vlo
    if v0 > vlo:
        packed = np.concatenate([np.zeros((1, packed.shape[1]), np.uint8), packed])
        row_start = np.concatenate([[0], row_start])
    return r0, packed, row_start


def distinct_pictures(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of packed key states -> (first row of each distinct picture, in order of first
    appearance; the picture of every row)."""
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def make_item(
    song: store.Song, start: int, window: int, context: int = 0, render_frames: bool = True,
    video_context: int = 0, lookahead: int = 0,
) -> dict:
    """The item for samples [start - context, start + window) of `song` (see the module doc),
    its video reaching `video_context` samples further back and `lookahead` samples further on."""
    if context < 0 or window <= 0 or video_context < 0 or lookahead < 0:
        raise ValueError(f"context, video_context, lookahead must be >= 0 and window > 0, got "
                         f"{context}, {video_context}, {lookahead} and {window}")
    lo, hi = start - context, start + window
    if hi > song.n_samples or start < 0:
        raise ValueError(f"window [{start}, {hi}) is outside the song ({song.n_samples} samples)")
    total = hi - lo
    a0 = max(lo, 0)
    pad = a0 - lo  # samples before the song starts

    audio16 = np.zeros(total, dtype=np.int16)
    audio16[pad:] = song.audio[a0:hi]

    # the video's samples: [vlo, vhi); before the song the empty keyboard, after it its last state
    vlo, vhi = lo - video_context, hi + lookahead
    _, packed, row_start = shown_rows(song.starts, song.packed_states, song.n_samples, vlo, vhi)
    lengths = np.diff(np.append(row_start, vhi - vlo))
    row_of_sample = np.repeat(np.arange(len(packed)), lengths)
    unique_rows, frame_of_row = distinct_pictures(packed)

    states = store.unpack_states(packed[unique_rows])
    audio = audio16.astype(np.float32) / INT16_SCALE
    item = {
        "states": torch.from_numpy(states),
        "frame_index": torch.from_numpy(frame_of_row[row_of_sample].astype(np.int64)),
        "frame_starts": torch.from_numpy(row_start[unique_rows].astype(np.int64)),
        "audio": torch.from_numpy(audio),
        "loss_start": int(context),
        "video_context": int(video_context),
        "song": song.id,
        "start": int(start),
    }
    if render_frames:
        item["frames"] = torch.from_numpy(keyboard.layout().render(states))
    return item


class SegmentDataset(Dataset):
    """Segments of the songs of one split (or several, or all) of a built store.

    context: samples of left context per item (the model's receptive field); video_context and
    lookahead: samples of video before the context and after the window; render_frames=False
    leaves out `frames` (use `states` and render them on the GPU with `render_frames_torch`).
    segments: window and overlap (default: those the store's manifest was built with).
    max_open_songs: songs kept memory-mapped at once in each process.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | Sequence[str] | None = "train",
        context: int = 0,
        *,
        video_context: int = 0,
        lookahead: int = 0,
        render_frames: bool = True,
        segments: SegmentConfig | None = None,
        max_open_songs: int = 8,
        camera_mix: float = 0.0,
        camera_seed: int = 0,
    ) -> None:
        manifest = store.read_manifest(root)
        self.root = os.fspath(root)
        self.audio_config: AudioConfig = from_dict(AudioConfig, manifest["sim_config"]["audio"])
        if segments is None:
            s = manifest["segments"]
            segments = SegmentConfig(s["window_seconds"], s["overlap_seconds"])
        self.segments = segments
        sr = self.audio_config.sample_rate
        self.window, self.hop = segments.window(sr), segments.hop(sr)
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.context = int(context)
        self.video_context, self.lookahead = int(video_context), int(lookahead)
        self.render_frames = render_frames
        self.max_open_songs = max(1, max_open_songs)
        if not 0.0 <= camera_mix <= 1.0:
            raise ValueError(f"camera_mix must be in [0, 1], got {camera_mix}")
        self.camera_mix, self.camera_seed = float(camera_mix), int(camera_seed)
        self._camera: OrderedDict[tuple[int, int], store.Song] = OrderedDict()
        splits = SPLITS if split is None else (split,) if isinstance(split, str) else tuple(split)
        for s in splits:
            if s not in SPLITS:
                raise DeepSynthError(f"unknown split {s!r} (one of {', '.join(SPLITS)})")
        self.split = split
        self.songs: list[dict] = [s for s in manifest["songs"] if s["split"] in splits]
        store.check_songs(root, self.songs)  # an altered file is refused here, once
        counts = [n_segments(s["n_samples"], self.window, self.hop) for s in self.songs]
        self.segment_counts = np.asarray(counts, dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(self.segment_counts)]).astype(np.int64)
        self._open: OrderedDict[int, store.Song] = OrderedDict()

    def __len__(self) -> int:
        return int(self._first[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Item index -> (song number in self.songs, segment number k in that song)."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"segment {index} out of range ({n} segments)")
        song = int(np.searchsorted(self._first, index, side="right")) - 1
        return song, int(index - self._first[song])

    def song(self, number: int) -> store.Song:
        """Song `number` of this dataset, memory-mapped (least recently used ones are closed)."""
        song = self._open.get(number)
        if song is None:
            song = store.open_song(store.song_dir(self.root, self.songs[number]["id"]),
                                   verify=False)  # checked when the dataset was opened
            self._open[number] = song
            while len(self._open) > self.max_open_songs:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(number)
        return song

    def camera_fps(self, number: int, k: int) -> int:
        """The frame rate a camera shows segment k of song `number` at (0: the exact keys)."""
        if self.camera_mix <= 0:
            return 0
        digest = hashlib.blake2b(f"{self.camera_seed}/{self.songs[number]['id']}/{k}".encode(),
                                 digest_size=8).digest()
        u = int.from_bytes(digest[:4], "little") / 2**32
        if u >= self.camera_mix:
            return 0
        return CAMERA_RATES[int.from_bytes(digest[4:], "little") % len(CAMERA_RATES)]

    def camera_song(self, number: int, fps: int) -> store.Song:
        """Song `number` with the key changes a camera at `fps` shows, once read (cached)."""
        key = (number, fps)
        song = self._camera.get(key)
        if song is None:
            exact = self.song(number)
            reading = camera_reading(exact.key_changes(), fps)
            song = store.Song(exact.id, exact.audio, reading.starts,
                              store.pack_states(reading.states), exact.meta)
            self._camera[key] = song
            while len(self._camera) > self.max_open_songs * len(CAMERA_RATES):
                self._camera.popitem(last=False)
        else:
            self._camera.move_to_end(key)
        return song

    def __getitem__(self, index: int) -> dict:
        number, k = self.locate(index)
        fps = self.camera_fps(number, k)
        song = self.camera_song(number, fps) if fps else self.song(number)
        item = make_item(song, k * self.hop, self.window, self.context,
                         self.render_frames, self.video_context, self.lookahead)
        item["segment"] = k
        item["camera_fps"] = fps
        return item

    def __getstate__(self) -> dict:  # DataLoader workers: re-open the songs there
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        state["_camera"] = OrderedDict()
        return state


def collate(items: Sequence[dict]) -> dict:
    """Items -> a batch: frames (and states) of all items concatenated, frame_index offset so
    frame_index[b, t] indexes the batch's frames; audio, frame_index stacked (B, T).

    Also `frame_item` (N,): the item each frame belongs to. `loss_start` stays an int (all items
    of a batch must share it).
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    loss_start = {it["loss_start"] for it in items}
    if len(loss_start) != 1:
        raise ValueError(f"items of one batch need the same loss_start, got {sorted(loss_start)}")
    counts = torch.tensor([len(it["states"]) for it in items], dtype=torch.int64)
    offsets = torch.cumsum(counts, 0) - counts
    batch = {
        "states": torch.cat([it["states"] for it in items]),
        "frame_index": torch.stack([it["frame_index"] + o for it, o in zip(items, offsets,
                                                                             strict=True)]),
        "frame_starts": torch.cat([it["frame_starts"] for it in items]),
        "frame_item": torch.repeat_interleave(torch.arange(len(items)), counts),
        "audio": torch.stack([it["audio"] for it in items]),
        "loss_start": loss_start.pop(),
        "song": [it["song"] for it in items],
        "segment": torch.tensor([it.get("segment", -1) for it in items], dtype=torch.int64),
        "start": torch.tensor([it["start"] for it in items], dtype=torch.int64),
    }
    if all("frames" in it for it in items):
        batch["frames"] = torch.cat([it["frames"] for it in items])
    return batch


def validation_subset(dataset: SegmentDataset, n: int = 100, seed: int = 0) -> Subset:
    """A fixed, seeded choice of n segments of `dataset` (pass the validation split).

    Each segment is ranked by a hash of (seed, song id, k) and the n lowest are kept, in dataset
    order: the same store and seed always give the same segments, and adding songs only brings in
    segments that outrank old ones.
    """
    keys = []
    for number, count in enumerate(dataset.segment_counts):
        sid = dataset.songs[number]["id"]
        for k in range(int(count)):
            digest = hashlib.sha256(f"deepsynth-val:{int(seed)}:{sid}:{k}".encode()).digest()
            keys.append(int.from_bytes(digest[:8], "big"))
    chosen = np.sort(np.argsort(np.asarray(keys, dtype=np.uint64), kind="stable")[:n])
    return Subset(dataset, chosen.tolist())


_TORCH_MAPS: dict[tuple[KeyboardLayout, torch.device],
                  tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def render_frames_torch(states: torch.Tensor,
                        layout: KeyboardLayout | None = None) -> torch.Tensor:
    """Key states (N, 88) bool -> frames (N, H, W) uint8 on the states' device (a GPU trainer
    renders there); the same pictures as `layout.render` (default: the simulator's keyboard)."""
    layout = keyboard.layout() if layout is None else layout
    device = states.device
    if (layout, device) not in _TORCH_MAPS:
        key_map = torch.as_tensor(np.where(layout.key_map < 0, keyboard.N_KEYS, layout.key_map),
                                  dtype=torch.int64, device=device)
        _TORCH_MAPS[layout, device] = (key_map, torch.tensor(layout.base, device=device),
                                       torch.tensor(layout.pressed, device=device))
    key_map, base, pressed = _TORCH_MAPS[layout, device]
    states = states.to(torch.bool)
    padded = torch.cat([states, states.new_zeros((len(states), 1))], dim=1)
    return torch.where(padded[:, key_map], pressed, base)
