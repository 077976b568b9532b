"""The torch Dataset: segments, frames vs key states, frame_index causality, collate, subset."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from deepsynth.data import store
from deepsynth.data.build import build_store
from deepsynth.data.dataset import (
    SegmentDataset,
    collate,
    make_item,
    render_frames_torch,
    validation_subset,
)
from deepsynth.data.segments import SegmentConfig, n_segments
from deepsynth.data.toy import write_toy_corpus
from deepsynth.errors import DeepSynthError
from deepsynth.sim import keyboard

CONTEXT = 1534  # the 27-layer receptive field


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    write_toy_corpus(tmp / "corpus", n_songs=4, bars=4)  # 8 to 14 s songs: 1 to 3 segments
    build_store(tmp / "corpus", tmp / "store")
    return tmp / "store"


def expected_states(song: store.Song, lo: int, hi: int) -> np.ndarray:
    """Key state shown at each sample lo..hi-1 of a song (empty keyboard before sample 0)."""
    t = np.arange(lo, hi)
    rows = np.searchsorted(song.starts, np.maximum(t, 0), side="right") - 1
    states = song.states()[rows]
    states[t < 0] = False
    return states


def test_segment_count_per_song_is_the_formula(root):
    manifest = store.read_manifest(root)
    ds = SegmentDataset(root, split=None)
    assert (ds.window, ds.hop) == (20_000, 12_000)
    for row, count in zip(ds.songs, ds.segment_counts, strict=True):
        assert count == n_segments(row["n_samples"], 20_000, 12_000) == row["segments"]
        assert count == (row["n_samples"] - 20_000) // 12_000 + 1
    assert len(ds) == sum(s["segments"] for s in manifest["songs"]) >= 6
    short = SegmentDataset(root, split=None, segments=SegmentConfig(2.0, 1.0))
    assert list(short.segment_counts) == [(s["n_samples"] - 8000) // 4000 + 1
                                          for s in short.songs]


def test_splits_are_disjoint_and_cover_the_store(root):
    ids = {s: {x["id"] for x in SegmentDataset(root, s).songs} for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"]
                or ids["val"] & ids["test"])
    assert set().union(*ids.values()) == {s["id"] for s in store.read_manifest(root)["songs"]}
    with pytest.raises(DeepSynthError, match="unknown split"):
        SegmentDataset(root, "dev")


def test_item_frames_decode_to_the_stored_key_states(root):
    ds = SegmentDataset(root, split=None, context=CONTEXT)
    for i in sorted({0, 1, len(ds) // 2, len(ds) - 1}):
        item = ds[i]
        number, k = ds.locate(i)
        song = ds.song(number)
        start = k * ds.hop
        assert item["start"] == start and item["segment"] == k and item["song"] == song.id
        T = CONTEXT + ds.window
        frames, states, index = item["frames"].numpy(), item["states"].numpy(), item["frame_index"]
        assert frames.dtype == np.uint8 and frames.shape == (len(states), 57, 780)
        assert index.shape == (T,) and index.dtype == torch.int64
        assert np.array_equal(keyboard.read_key_states(frames), states)
        # the frame at every sample shows the key state the store has for that sample
        shown = keyboard.read_key_states(frames)[index.numpy()]
        assert np.array_equal(shown, expected_states(song, start - CONTEXT, start + ds.window))
        # distinct pictures, in order of first appearance, none used before it starts
        assert len(np.unique(states, axis=0)) == len(states)
        starts = item["frame_starts"].numpy()
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        assert np.all(starts[index.numpy()] <= np.arange(T))
        assert np.all(np.diff(np.maximum.accumulate(index.numpy())) <= 1)


def test_item_audio_and_left_context(root):
    ds = SegmentDataset(root, split=None, context=CONTEXT)
    first, second = ds[0], ds[1]
    assert ds.locate(1) == (0, 1)
    song = ds.song(0)
    for item in (first, second):
        audio = item["audio"].numpy()
        assert "classes" not in item  # the model's output distribution makes them
        assert item["loss_start"] == CONTEXT
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        lo = item["start"] - CONTEXT
        pad = max(0, -lo)
        assert np.array_equal(audio[pad:], song.audio[lo + pad : item["start"] + ds.window]
                              / 32768.0)
    # segment 0 starts the song: its context is silence and the empty keyboard
    assert np.all(first["audio"][:CONTEXT].numpy() == 0)
    empty = first["states"][first["frame_index"][:CONTEXT]]
    assert not empty.any()
    # segment 1 has real audio in its context (no padding)
    assert np.abs(second["audio"][:CONTEXT].numpy()).max() > 0


def test_states_only_and_gpu_style_rendering(root):
    ds = SegmentDataset(root, split=None, context=100, render_frames=False)
    item = ds[len(ds) - 1]
    assert "frames" not in item
    frames = render_frames_torch(item["states"])
    assert frames.dtype == torch.uint8
    assert np.array_equal(frames.numpy(), keyboard.render(item["states"].numpy()))
    rng = np.random.default_rng(0)
    states = rng.random((5, 88)) < 0.3
    assert np.array_equal(render_frames_torch(torch.from_numpy(states)).numpy(),
                          keyboard.render(states))


def test_collate_offsets_frame_index(root):
    ds = SegmentDataset(root, split=None, context=CONTEXT)
    items = [ds[i] for i in (0, 3, len(ds) - 1)]
    batch = collate(items)
    counts = [len(it["states"]) for it in items]
    assert batch["frames"].shape == (sum(counts), 57, 780)
    assert batch["frame_index"].shape == batch["audio"].shape == (
        3, CONTEXT + ds.window)
    assert batch["loss_start"] == CONTEXT
    assert batch["frame_item"].tolist() == [0] * counts[0] + [1] * counts[1] + [2] * counts[2]
    offset = 0
    for b, it in enumerate(items):
        assert torch.equal(batch["frame_index"][b], it["frame_index"] + offset)
        assert torch.equal(batch["frames"][offset : offset + counts[b]], it["frames"])
        # the batch's frame at each sample is the item's frame at that sample
        assert torch.equal(batch["states"][batch["frame_index"][b]],
                           it["states"][it["frame_index"]])
        assert torch.equal(batch["audio"][b], it["audio"])
        offset += counts[b]
    assert batch["song"] == [it["song"] for it in items]
    other = make_item(ds.song(0), 0, ds.window, context=5)
    with pytest.raises(ValueError, match="same loss_start"):
        collate([items[0], other])


def test_validation_subset_is_fixed_and_seeded(root):
    ds = SegmentDataset(root, split=None)
    a = validation_subset(ds, n=4, seed=1)
    assert len(a) == 4 and a.indices == sorted(a.indices)
    assert a.indices == validation_subset(SegmentDataset(root, split=None), n=4, seed=1).indices
    assert any(validation_subset(ds, n=4, seed=s).indices != a.indices for s in range(2, 8))
    assert len(validation_subset(ds, n=100)) == len(ds)  # fewer segments than asked: all
    assert a[0]["start"] == ds[a.indices[0]]["start"]


def test_dataloader_with_workers_and_bounded_open_songs(root):
    ds = SegmentDataset(root, split=None, context=CONTEXT, max_open_songs=1)
    for i in range(len(ds)):
        ds[i]
    assert len(ds._open) == 1  # songs are mapped on demand, a bounded number at a time
    assert len(pickle.dumps(ds)) < 20_000  # workers get no audio, they map the songs themselves
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        seen += list(zip(batch["song"], batch["segment"].tolist(), strict=True))
        assert batch["frames"].shape[0] == batch["states"].shape[0]
        assert batch["frame_index"].max() < len(batch["frames"])
    assert sorted(seen) == sorted((ds.songs[ds.locate(i)[0]]["id"], ds.locate(i)[1])
                                  for i in range(len(ds)))


def test_make_item_rejects_windows_outside_the_song(root):
    song = store.open_song(store.song_dir(root, "Toy-piece0"))
    with pytest.raises(ValueError):
        make_item(song, song.n_samples - 10, 20_000)
    with pytest.raises(IndexError):
        SegmentDataset(root, split=None)[10_000]


@pytest.mark.parametrize("video_context,lookahead", [(700, 0), (0, 45), (3000, 16)])
def test_item_video_reaches_before_and_after_the_audio(root, video_context, lookahead):
    ds = SegmentDataset(root, split=None, context=CONTEXT, video_context=video_context,
                        lookahead=lookahead)
    plain = SegmentDataset(root, split=None, context=CONTEXT)
    for i in sorted({0, 1, len(ds) - 1}):  # the song's start, middle and end
        item, ref = ds[i], plain[i]
        song = ds.song(ds.locate(i)[0])
        start = item["start"]
        index = item["frame_index"].numpy()
        assert len(index) == video_context + CONTEXT + ds.window + lookahead
        assert torch.equal(item["audio"], ref["audio"]) and item["loss_start"] == CONTEXT
        shown = keyboard.read_key_states(item["frames"].numpy())[index]
        lo = start - CONTEXT - video_context
        # before the song: the empty keyboard; after its end: its last state
        assert np.array_equal(shown, expected_states(song, lo, start + ds.window + lookahead))
        assert np.all(item["frame_starts"].numpy()[index] <= np.arange(len(index)))


def test_camera_mix_shows_some_items_as_a_camera_reads_them(root):
    from deepsynth.sim.camera import CAMERA_RATES, camera_reading

    exact = SegmentDataset(root, "train", context=40, lookahead=15)
    mixed = SegmentDataset(root, "train", context=40, lookahead=15, camera_mix=0.5,
                           camera_seed=3)
    fps = [mixed[i]["camera_fps"] for i in range(len(mixed))]
    assert {exact[i]["camera_fps"] for i in range(len(exact))} == {0}
    assert set(fps) - {0} <= set(CAMERA_RATES) and 0.2 < np.mean(np.array(fps) > 0) < 0.8
    again = SegmentDataset(root, "train", context=40, lookahead=15, camera_mix=0.5,
                           camera_seed=3)
    assert [again[i]["camera_fps"] for i in range(len(again))] == fps  # seeded, per item
    i = next(i for i, f in enumerate(fps) if f)
    cam, ref = mixed[i], exact[i]
    assert torch.equal(cam["audio"], ref["audio"]) and cam["start"] == ref["start"]
    # the keys are those of the camera reading of the whole song, cut like the exact ones
    number, k = mixed.locate(i)
    song = exact.song(number)
    reading = camera_reading(song.key_changes(), fps[i])
    as_read = store.Song(song.id, song.audio, reading.starts, store.pack_states(reading.states),
                         song.meta)
    want = make_item(as_read, k * mixed.hop, mixed.window, 40, True, 0, 15)
    for key in ("states", "frame_index", "frame_starts", "frames"):
        assert torch.equal(cam[key], want[key]), key
    assert not torch.equal(cam["frame_index"], ref["frame_index"]) or \
        not torch.equal(cam["states"], ref["states"])
    with pytest.raises(ValueError, match="camera_mix"):
        SegmentDataset(root, "train", camera_mix=1.5)
    # items pickle to loader workers and come back the same
    assert torch.equal(pickle.loads(pickle.dumps(mixed))[i]["states"], cam["states"])
