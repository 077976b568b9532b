import numpy as np
import pytest

from deepsynth.sim import keyboard as kb


def test_layout_counts_and_size():
    g = kb.layout()
    assert g.key_map.shape == (kb.HEIGHT, kb.WIDTH) == (57, 780)
    assert g.black.sum() == 36 and (~g.black).sum() == 52
    assert kb.layout().base.dtype == np.uint8


def test_every_key_has_pixels_of_its_own_and_no_overlap():
    masks = kb.layout().masks
    assert masks.shape == (88, 57, 780)
    assert masks.sum(axis=0).max() == 1  # no pixel belongs to two keys
    own = masks.sum(axis=(1, 2))
    assert own.min() > 100


def test_black_keys_narrower_and_shorter():
    g = kb.layout()
    masks = g.masks
    cols = masks.any(axis=1).sum(axis=1)  # width of each key
    rows = masks.any(axis=2).sum(axis=1)  # height
    assert cols[g.black].max() < cols[~g.black].min()
    assert rows[g.black].max() < rows[~g.black].min() == 57
    # A0 is white, A#0 black, C8 white; keys run left to right in pitch order
    assert not g.black[0] and g.black[1] and not g.black[87]
    left = [np.flatnonzero(m.any(axis=0))[0] for m in masks]
    assert np.all(np.diff(left) > 0)


def test_borders_visible_between_white_keys():
    g = kb.layout()
    bottom = g.base[-1]
    assert (bottom == kb.BORDER).sum() == 52  # one border column per white key
    assert len({kb.WHITE_UP, kb.WHITE_DOWN, kb.BLACK_UP, kb.BLACK_DOWN, kb.BORDER}) == 5


def test_render_batch_equals_single_and_reads_back():
    rng = np.random.default_rng(0)
    states = rng.random((50, 88)) < 0.2
    frames = kb.render(states)
    assert frames.shape == (50, 57, 780) and frames.dtype == np.uint8
    assert np.array_equal(frames[7], kb.render(states[7]))
    assert np.array_equal(kb.read_key_states(frames), states)


def test_pressed_shades():
    g = kb.layout()
    s = np.zeros(88, bool)
    s[[0, 1]] = True  # A0 (white), A#0 (black)
    f = kb.render(s)
    assert set(np.unique(f[g.key_map == 0])) == {kb.WHITE_DOWN}
    assert set(np.unique(f[g.key_map == 1])) == {kb.BLACK_DOWN}
    assert set(np.unique(f[g.key_map == 2])) == {kb.WHITE_UP}


def test_read_states_survives_mild_noise():
    rng = np.random.default_rng(1)
    states = rng.random((10, 88)) < 0.3
    noisy = kb.render(states).astype(int) + rng.integers(-20, 21, (10, 57, 780))
    assert np.array_equal(kb.read_key_states(np.clip(noisy, 0, 255).astype(np.uint8)), states)


def test_render_rejects_wrong_shape():
    with pytest.raises(ValueError):
        kb.render(np.zeros((3, 87), bool))
    with pytest.raises(ValueError):
        kb.read_key_states(np.zeros((2, 56, 780), np.uint8))
