"""The training loop on a tiny store the test builds: the files of a run, best.pt, exact resume,
the --no-video ablation, refusals (no checkpoint, a corrupt one, a changed recipe)."""

import json
import math
import shutil

import pytest
import torch

from deepsynth.checkpoint import load_checkpoint, save_checkpoint, shard_files
from deepsynth.errors import DeepSynthError
from deepsynth.model import DeepSynth, get_preset
from deepsynth.sim import keyboard
from deepsynth.train import RunOptions, TrainConfig, load_training_state, train
from deepsynth.train.logs import COLUMNS, read_metrics

# 1 s segments keep the steps short (the paper's are 5 s); 11 steps an epoch on this store
RECIPE = {"window_seconds": 1.0, "overlap_seconds": 0.0, "val_segments": 6, "val_every": 4,
          "log_every": 1}
QUIET = {"threads": 1, "progress": False, "tensorboard": False}




@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    """One run with every log on: 14 steps over 2 epochs, a high learning rate so the
    validation loss goes up and down."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = train(store, out, "tiny", dict(RECIPE, lr=0.03, val_every=2),
                   RunOptions(max_steps=14, threads=1, progress=True))
    return result


def metrics(out):
    return read_metrics(out / "metrics.csv")


def test_run_folder_has_every_log(run):
    out = run.out
    assert run.stopped == "max_steps" and run.step == 14 and run.epoch == 1
    names = {p.name for p in out.iterdir()}
    assert {"last.pt", "best.pt", "metrics.csv", "loss.png", "tb", "config.json"} <= names
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    for col in ("step", "epoch", "train_ce", "val_ce", "val_ce_bits", "val_acc", "lr",
                "grad_norm", "samples_per_s"):
        assert col in header
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 15))
    for r in rows:
        assert r["train_ce"] > 0 and r["lr"] == 0.03 and r["grad_norm"] > 0
        assert r["samples_per_s"] > 0
        assert r["train_ce_bits"] == pytest.approx(r["train_ce"] / math.log(2))
    val = [r for r in rows if r["val_ce"] is not None]
    assert [r["step"] for r in val] == [2, 4, 6, 8, 10, 11, 12, 14]  # every 2, epoch end (11)
    assert all(0 <= r["val_acc"] <= 1 for r in val)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    config = json.loads((out / "config.json").read_text())
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    assert config["context"] == model.receptive_field
    assert config["train"]["l2"] == get_preset("tiny").l2  # the preset's L2 by default


def test_best_checkpoint_holds_the_lowest_validation(run):
    rows = [r for r in metrics(run.out) if r["val_ce"] is not None]
    best_row = min(rows, key=lambda r: r["val_ce"])
    assert best_row["step"] != rows[-1]["step"]  # the run got worse after its best point
    model, payload = load_checkpoint(run.best)
    extra = payload["extra"]
    assert extra["step"] == best_row["step"] == run.best_step
    assert extra["val_ce"] == pytest.approx(best_row["val_ce"], rel=1e-7)
    assert run.best_val_ce == pytest.approx(best_row["val_ce"], rel=1e-7)
    assert "optimizer" not in payload  # best.pt is the model only
    # the file alone rebuilds the model, with its recipe and preset beside it
    assert extra["preset"] == "tiny" and model.cfg == get_preset("tiny").model
    cfg = TrainConfig.from_dict(extra["train_config"])
    assert cfg.lr == 0.03 and cfg.window_seconds == 1.0 and cfg.precision == "fp32"
    last = load_training_state(run.last)
    assert last.state.step == 14 and last.state.best_step == best_row["step"]
    assert last.preset == "tiny" and last.config == cfg


def test_resume_reaches_the_same_losses_as_a_straight_run(store, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    recipe = dict(RECIPE, log_every=3)  # the split falls inside a metrics window
    train(store, straight, "tiny", recipe, RunOptions(max_steps=16, **QUIET))
    first = train(store, split, "tiny", recipe, RunOptions(max_steps=7, **QUIET))
    assert first.step == 7 and first.stopped == "max_steps"
    # the rest in a "fresh process": nothing carried over but the files
    second = train(store, split, None, None, RunOptions(max_steps=16, resume="always", **QUIET))
    assert second.step == 16 and second.epoch == 1
    a = [r for r in metrics(straight) if r["train_ce"] is not None]
    b = [r for r in metrics(split) if r["train_ce"] is not None]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [3, 6, 9, 12, 15]
    for ra, rb in zip(a, b, strict=True):
        assert rb["train_ce"] == pytest.approx(ra["train_ce"], rel=1e-6, abs=1e-7)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-6, abs=1e-7)
    val_a = {r["step"]: r["val_ce"] for r in metrics(straight) if r["val_ce"] is not None}
    val_b = {r["step"]: r["val_ce"] for r in metrics(split) if r["val_ce"] is not None}
    assert set(val_b) == set(val_a) | {7}  # the first part validated where it stopped
    for step, ce in val_a.items():
        assert val_b[step] == pytest.approx(ce, rel=1e-6)
    wa = load_checkpoint(straight / "last.pt")[0].state_dict()
    wb = load_checkpoint(split / "last.pt")[0].state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)
    # resuming a finished run does nothing
    again = train(store, split, None, None, RunOptions(max_steps=16, resume="always", **QUIET))
    assert again.stopped == "done" and again.step == 16


def test_resume_refusals(store, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DeepSynthError, match="nothing to resume"):
        train(store, out, "tiny", RECIPE, RunOptions(max_steps=2, resume="always", **QUIET))
    train(store, out, "tiny", RECIPE, RunOptions(max_steps=2, **QUIET))
    with pytest.raises(DeepSynthError, match="already holds a run"):  # never overwritten
        train(store, out, "tiny", RECIPE, RunOptions(max_steps=4, **QUIET))
    with pytest.raises(DeepSynthError, match="different recipe.*lr"):
        train(store, out, None, {"lr": 0.5}, RunOptions(max_steps=4, resume="always", **QUIET))
    with pytest.raises(DeepSynthError, match="preset 'tiny', not 'small'"):
        train(store, out, "small", None, RunOptions(max_steps=4, resume="always", **QUIET))
    # more epochs may be asked for on resume
    r = train(store, out, "tiny", {"epochs": 3}, RunOptions(max_steps=3, resume="auto", **QUIET))
    assert r.step == 3 and r.config.epochs == 3
    # a corrupt last.pt is an error, never a silent fresh start
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 3])
    for mode in ("always", "auto"):
        with pytest.raises(DeepSynthError) as info:
            train(store, out, "tiny", RECIPE, RunOptions(max_steps=4, resume=mode, **QUIET))
        assert "last.pt" in str(info.value) and "\n" not in str(info.value)
    # a model-only checkpoint cannot be resumed from
    save_checkpoint(out / "last.pt", DeepSynth(get_preset("tiny").model, keyboard.layout()),
                    extra={})
    with pytest.raises(DeepSynthError, match="no training state"):
        train(store, out, None, None, RunOptions(max_steps=4, resume="always", **QUIET))


def test_sharded_last_checkpoint_resumes(store, tmp_path):
    out = tmp_path / "run"
    opts = dict(QUIET, shard_mb=0.05)
    train(store, out, "tiny", RECIPE, RunOptions(max_steps=3, **opts))
    parts = shard_files(out / "last.pt")
    assert len(parts) >= 2 and all(p.stat().st_size <= 0.05 * 2**20 for p in parts)
    assert load_checkpoint(out / "best.pt")[1]["extra"]["step"] == 3
    r = train(store, out, None, None, RunOptions(max_steps=5, resume="always", **opts))
    assert r.step == 5


def test_no_video_ablation_trains_without_frames(store, tmp_path):
    out = tmp_path / "novideo"
    r = train(store, out, "tiny", dict(RECIPE, no_video=True), RunOptions(max_steps=4, **QUIET))
    model, payload = load_checkpoint(out / "last.pt")
    assert model.cfg.no_video and model.frame_cnn is None and model.encoder is None
    assert payload["extra"]["train_config"]["no_video"] is True
    assert r.step == 4 and all(r["train_ce"] > 0 for r in metrics(out))
    video_model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    video = sum(p.numel() for p in video_model.parameters())
    assert sum(p.numel() for p in model.parameters()) < video


def test_conditioning_variant_trains_and_its_checkpoint_generates(store, tmp_path, monkeypatch):
    import dataclasses

    from deepsynth.config import KeyFeatureConfig
    from deepsynth.data.store import open_song, read_manifest, song_dir
    from deepsynth.evaluate.teacher import teacher_forced_scores
    from deepsynth.generate.generator import generate
    from deepsynth.generate.sources import source_from_changes
    from deepsynth.model.presets import PRESETS, Preset

    keys = KeyFeatureConfig(enabled=True, window=300, harmonics=2)
    cfg = dataclasses.replace(get_preset("tiny").model, encoder_hop=4, lookahead=3, keys=keys)
    monkeypatch.setitem(PRESETS, "tiny-keys", Preset(cfg, 1e-4, "test variant"))
    out = tmp_path / "keys"
    r = train(store, out, "tiny-keys", RECIPE, RunOptions(max_steps=3, **QUIET))
    assert r.step == 3
    model, _ = load_checkpoint(out / "last.pt")  # the checkpoint alone rebuilds the variant
    assert model.cfg == cfg and model.keys is not None
    config = json.loads((out / "config.json").read_text())
    assert config["context"] == model.receptive_field
    rows = [row for row in metrics(out) if row["val_ce"] is not None]
    assert rows and all(math.isfinite(row["val_ce"]) for row in rows)
    scores = teacher_forced_scores(model, store, "val", segments=2)
    assert math.isfinite(scores["ce_nats"])
    song = read_manifest(store)["songs"][0]["id"]
    changes = open_song(song_dir(store, song)).key_changes()
    audio = generate(model, [source_from_changes(changes)], seed=0, chunk=700)[0]
    assert len(audio) == changes.n_samples


def test_resident_data_trains_as_the_loader_does(store, tmp_path):
    runs = {}
    for resident in (False, True):
        out = tmp_path / f"resident-{resident}"
        train(store, out, "tiny", RECIPE, RunOptions(max_steps=5, resident_data=resident,
                                                     **QUIET))
        runs[resident] = metrics(out)
    for a, b in zip(runs[False], runs[True], strict=True):
        assert a["step"] == b["step"]
        assert a["train_ce"] == pytest.approx(b["train_ce"], rel=1e-5)
    assert any(r["val_ce"] is not None for r in runs[True])


def test_resume_refuses_a_preset_changed_since(store, tmp_path, monkeypatch):
    import dataclasses

    from deepsynth.model.presets import PRESETS, Preset

    out = tmp_path / "changed"
    train(store, out, "tiny", RECIPE, RunOptions(max_steps=1, **QUIET))
    tiny = get_preset("tiny")
    # the same weights fit, but the conditioning would differ: refused, not resumed silently
    monkeypatch.setitem(PRESETS, "tiny", Preset(dataclasses.replace(tiny.model, encoder_hop=2),
                                                tiny.l2, tiny.description))
    with pytest.raises(DeepSynthError, match="differs from preset"):
        train(store, out, None, {}, RunOptions(max_steps=2, resume="always", **QUIET))


def test_bad_settings_are_one_line_errors(store, tmp_path):
    with pytest.raises(DeepSynthError, match="bf16"):
        train(store, tmp_path / "a", "tiny", dict(RECIPE, precision="bf16"),
              RunOptions(max_steps=1, device="cpu", **QUIET))
    with pytest.raises(DeepSynthError, match="unknown preset"):
        train(store, tmp_path / "b", "nope", RECIPE, RunOptions(max_steps=1, **QUIET))
    with pytest.raises(DeepSynthError, match="fewer than one batch"):
        train(store, tmp_path / "c", "tiny", dict(RECIPE, batch_size=1000),
              RunOptions(max_steps=1, **QUIET))
    with pytest.raises(DeepSynthError, match="lr must be positive"):
        train(store, tmp_path / "d", "tiny", dict(RECIPE, lr=-1.0), RunOptions(**QUIET))
    shutil.rmtree(tmp_path, ignore_errors=True)
