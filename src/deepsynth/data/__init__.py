"""Training data: corpus -> store (build), splits by song (splits), segments (segments),
the store on disk (store) and the torch Dataset over it (dataset).

The build needs no torch and no video library; the dataset names (SegmentDataset, collate,
validation_subset, make_item, render_frames_torch) import torch on first use.
"""

from __future__ import annotations

from deepsynth.data.build import BuildReport, SongResult, build_song, build_store, find_corpus
from deepsynth.data.segments import SegmentConfig, n_segments, segment_starts
from deepsynth.data.splits import SPLITS, assign_splits, split_of
from deepsynth.data.store import open_song, read_manifest, store_stats, verify_song

_DATASET_NAMES = ("SegmentDataset", "collate", "validation_subset", "make_item",
                  "render_frames_torch")

__all__ = [
    "SPLITS", "BuildReport", "SegmentConfig", "SongResult", "assign_splits", "build_song",
    "build_store", "find_corpus", "n_segments", "open_song", "read_manifest", "segment_starts",
    "split_of", "store_stats", "verify_song", *_DATASET_NAMES,
]


def __getattr__(name: str):
    if name in _DATASET_NAMES:
        from deepsynth.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'deepsynth.data' has no attribute {name!r}")
