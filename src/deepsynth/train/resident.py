"""The training split resident on the training device: no loader processes, no copies per step.

The int16 audio of every song of a SegmentDataset (12.8 h of the corpus's training split: 370 MB)
and its key states (88 bools per change) are copied to the device once. A batch is then cut on
the device: the audio by a gather over sample positions, its mu-law classes computed there, the
frame shown at every sample by a `searchsorted` over the change times, and the frames drawn by
`render_frames_torch`. The host only works out which change rows each item shows (a few numbers
per item, from the memory-mapped change times) and ships them with the positions; nothing ever
comes back from the device, so a step never waits for a host round trip.

A batch holds the same samples, classes and pictures at every sample as `collate` of the
SegmentDataset items (tested); frames are listed per item in row order instead of order of first
appearance.
"""

from __future__ import annotations

import numpy as np
import torch

from deepsynth.audio import INT16_SCALE
from deepsynth.data import store
from deepsynth.data.dataset import (
    SegmentDataset,
    distinct_pictures,
    render_frames_torch,
    shown_rows,
)
from deepsynth.train.data import DeviceBatch


class ResidentSegments:
    """The segments of `dataset` (its windows, context, video context and lookahead) on
    `device`; `batch(indices)` gives a DeviceBatch, like `to_device(collate(items))`."""

    def __init__(self, dataset: SegmentDataset, device: torch.device | str,
                 video: bool = True) -> None:
        self.ds = dataset
        self.device = torch.device(device)
        self.video = video
        audio, starts, states = [], [], []
        self.audio_base = np.zeros(len(dataset.songs), np.int64)  # song's first sample
        self.row_base = np.zeros(len(dataset.songs), np.int64)  # song's first change row
        self.n_samples = np.zeros(len(dataset.songs), np.int64)
        self.host_starts: list[np.ndarray] = []
        self.host_packed: list[np.ndarray] = []  # packed key states (memory-mapped)
        a = r = 0
        for number, row in enumerate(dataset.songs):
            song = store.open_song(store.song_dir(dataset.root, row["id"]))
            self.audio_base[number], self.row_base[number] = a, r
            self.n_samples[number] = song.n_samples
            audio.append(np.asarray(song.audio))
            song_starts = np.asarray(song.starts, np.int64)
            self.host_starts.append(song_starts)
            self.host_packed.append(song.packed_states)
            starts.append(song_starts + a)  # one timeline: songs one after the other
            if video:
                states.append(store.unpack_states(np.asarray(song.packed_states)))
            a += song.n_samples
            r += len(song_starts)
        self.empty_row = r  # the empty keyboard, shown before a song starts
        dev = self.device
        self.audio = torch.from_numpy(np.concatenate(audio)).to(dev)
        self.starts = torch.from_numpy(np.concatenate(starts)).to(dev)
        self.states = None
        if video:
            table = np.concatenate(states + [np.zeros((1, 88), bool)])
            self.states = torch.from_numpy(table).to(dev)

    @property
    def nbytes(self) -> int:
        parts = [self.audio, self.starts] + ([self.states] if self.states is not None else [])
        return sum(t.numel() * t.element_size() for t in parts)

    def _rows(self, number: int, vlo: int, vhi: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Change rows song `number` shows over its samples [vlo, vhi): the global rows of its
        distinct pictures, the picture of each row shown, and the global row the first column
        would have counted from (one before the song's first shown row if it starts with the
        empty keyboard)."""
        r0, packed, _ = shown_rows(self.host_starts[number], self.host_packed[number],
                                   int(self.n_samples[number]), vlo, vhi)
        pad = int(vlo < 0)
        rows = np.arange(len(packed)) + self.row_base[number] + r0 - pad
        if pad:
            rows[0] = self.empty_row
        unique, picture_of_row = distinct_pictures(packed)
        return rows[unique], picture_of_row, int(self.row_base[number] + r0 - pad)

    def batch(self, indices: list[int]) -> DeviceBatch:
        ds, dev = self.ds, self.device
        context, vctx, ahead = ds.context, ds.video_context, ds.lookahead
        T = context + ds.window
        located = [ds.locate(i) for i in indices]
        lo = np.array([k * ds.hop - context for _, k in located], np.int64)
        numbers = np.array([n for n, _ in located], np.int64)
        # audio: positions in the one timeline; before a song's start, silence
        t = torch.arange(T, device=dev)
        pos = torch.from_numpy(lo).to(dev)[:, None] + t  # song sample of each column
        base = torch.from_numpy(self.audio_base[numbers]).to(dev)[:, None]
        pcm = self.audio[(base + pos.clamp(min=0)).flatten()].view(len(indices), T)
        audio = torch.where(pos >= 0, pcm.float() / INT16_SCALE, 0.0)
        if not self.video:
            return DeviceBatch(None, None, audio, context)
        # video: the row shown at every column, then the item's picture of that row
        Tv = vctx + T + ahead
        pictures, maps, offsets, first_row = [], [], [], []
        n_pictures = n_rows = 0
        for (number, _), item_lo in zip(located, lo, strict=True):
            unique_rows, picture_of_row, first = self._rows(number, int(item_lo) - vctx,
                                                            int(item_lo) + T + ahead)
            first_row.append(first)
            pictures.append(unique_rows)
            maps.append(picture_of_row + n_pictures)
            offsets.append(n_rows)
            n_pictures += len(unique_rows)
            n_rows += picture_of_row.size
        vpos = torch.from_numpy(lo - vctx).to(dev)[:, None] + torch.arange(Tv, device=dev)
        last = torch.from_numpy(self.n_samples[numbers] - 1).to(dev)[:, None]
        shown = torch.searchsorted(self.starts, base + torch.minimum(vpos, last), right=True) - 1
        # shown row -> position in the item's list of shown rows (the empty keyboard first)
        local = shown - torch.tensor(first_row, dtype=torch.int64, device=dev)[:, None]
        local = torch.where(vpos >= 0, local, 0)
        table = torch.from_numpy(np.concatenate(maps)).to(dev)
        item_offset = torch.from_numpy(np.array(offsets, np.int64)).to(dev)[:, None]
        frame_index = table[local + item_offset]
        picture_rows = torch.from_numpy(np.concatenate(pictures)).to(dev)
        frames = render_frames_torch(self.states[picture_rows])
        return DeviceBatch(frames, frame_index, audio, context)
