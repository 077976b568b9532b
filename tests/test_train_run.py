"""The run object (train/run.py) on its own, the metrics accumulated between rows across a resume
(last.pt files of either key), the model's audio taken from the store (and a resume on a store of
another rate refused), and the shape of the train package's code."""

import ast
import json
from pathlib import Path

import pytest
import torch

from deepsynth.checkpoint import load_checkpoint, read_payload
from deepsynth.config import AudioConfig, SimConfig, from_dict
from deepsynth.data.store import read_manifest
from deepsynth.errors import DeepSynthError
from deepsynth.train import RunOptions, distributed, load_training_state, train
from deepsynth.train.logs import read_metrics
from deepsynth.train.run import Run
from deepsynth.train.state import TrainState

RECIPE = {"window_seconds": 1.0, "overlap_seconds": 0.0, "val_segments": 4, "val_every": 0,
          "log_every": 3}
QUIET = {"threads": 1, "progress": False, "tensorboard": False}


@pytest.fixture(scope="module")
def store_8k(tmp_path_factory):
    """The shared toy store's songs at 8 kHz."""
    from deepsynth.data.build import build_store
    from deepsynth.data.toy import write_toy_corpus

    tmp = tmp_path_factory.mktemp("store-8k")
    write_toy_corpus(tmp / "corpus", n_songs=4, bars=4)
    build_store(tmp / "corpus", tmp / "store", seed=4,
                sim=SimConfig(audio=AudioConfig(sample_rate=8000)))
    return tmp / "store"


def rows_with_train_figures(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.csv") if r["train_ce"] is not None]


def test_a_run_object_steps_checkpoints_and_resumes_where_it_was(store, tmp_path):
    env = distributed.setup("cpu")
    out = tmp_path / "parts"
    options = RunOptions(max_steps=5, device="cpu", **QUIET)
    with Run.open(env, store, out, "tiny", RECIPE, options) as run:
        assert not run.finished() and run.state.step == 0 and run.per_epoch == 11
        batches = run.batches()
        for _ in range(2):
            run.step(next(batches))
            assert run.should_stop(False) is None and not run.validation_due(None)
            run.log(validate=False)  # no row yet (log_every 3)
        assert run.should_stop(True) == "signal" and run.validation_due("max_steps")
        run.checkpoint()
        weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    assert read_metrics(out / "metrics.csv") == []
    ckpt = load_training_state(out / "last.pt")
    assert (ckpt.state.step, ckpt.state.batch_in_epoch, ckpt.state.epoch) == (2, 2, 0)
    assert ckpt.state.metrics["steps"] == 2 and ckpt.state.metrics["ce"] > 0
    resumed = RunOptions(max_steps=5, device="cpu", resume="always", **QUIET)
    with Run.open(env, store, out, None, None, resumed) as again:
        assert again.state.step == 2 and again.metrics.to_dict() == ckpt.state.metrics
        for k, v in again.model.state_dict().items():
            assert torch.equal(v, weights[k]), k
        again.step(next(again.batches()))
        assert (again.state.step, again.state.batch_in_epoch) == (3, 3)
        again.log(validate=True)  # the row of step 3: its 3 train steps and a validation
    # the parts, put together by hand, give the row a straight train() gives
    straight = train(store, tmp_path / "straight", "tiny", RECIPE,
                     RunOptions(max_steps=3, **QUIET))
    assert straight.stopped == "max_steps"
    (a,), (b,) = read_metrics(straight.out / "metrics.csv"), read_metrics(out / "metrics.csv")
    assert b["step"] == a["step"] == 3
    for column in ("train_ce", "grad_norm", "clipped", "l2_penalty", "val_ce", "val_acc", "lr"):
        assert b[column] == pytest.approx(a[column], rel=1e-6), column


def test_train_state_reads_the_metrics_under_their_old_key():
    saved = {"steps": 2, "ce": 11.0, "grad_norm": 3.0, "clipped": 0.0, "penalty": 0.1,
             "samples": 10, "seconds": 0.5}
    old = TrainState.from_dict({"step": 8, "window": saved})
    assert old.step == 8 and old.metrics == saved
    assert "window" not in old.to_dict() and old.to_dict()["metrics"] == saved
    both = TrainState.from_dict({"metrics": {"steps": 1}, "window": saved})
    assert both.metrics == {"steps": 1}


def test_a_last_pt_holding_the_metrics_as_window_resumes_exactly(store, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(store, straight, "tiny", RECIPE, RunOptions(max_steps=9, **QUIET))
    train(store, split, "tiny", RECIPE, RunOptions(max_steps=7, **QUIET))
    # last.pt as a run before the rename wrote it: the figures of step 7 under "window"
    payload = read_payload(split / "last.pt")
    state = payload["train_state"]
    assert state["metrics"]["steps"] == 1  # one step since the row at step 6
    state["window"] = state.pop("metrics")
    payload.pop("checksum", None)  # as a file written before checksums
    torch.save(payload, split / "last.pt")
    train(store, split, None, None, RunOptions(max_steps=9, resume="always", **QUIET))
    a, b = rows_with_train_figures(straight), rows_with_train_figures(split)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [3, 6, 9]
    for ra, rb in zip(a, b, strict=True):  # step 9's row averages steps 7, 8 and 9
        assert rb["train_ce"] == pytest.approx(ra["train_ce"], rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-6)
    again = read_payload(split / "last.pt")["train_state"]
    assert "window" not in again and again["metrics"]["steps"] == 0


def test_the_model_takes_the_stores_audio_and_a_resume_on_another_rate_is_refused(
        store, store_8k, tmp_path):
    audio = from_dict(AudioConfig, read_manifest(store)["sim_config"]["audio"])
    assert audio.sample_rate == 4000
    four = tmp_path / "4k"
    r = train(store, four, "tiny", RECIPE, RunOptions(max_steps=1, **QUIET))
    assert r.model.cfg.audio == audio
    with pytest.raises(DeepSynthError) as info:
        train(store_8k, four, None, None, RunOptions(max_steps=2, resume="always", **QUIET))
    message = str(info.value)
    assert "4000 Hz" in message and "8000 Hz" in message and "\n" not in message
    assert load_training_state(four / "last.pt").state.step == 1  # left as it was
    # a fresh run on the 8 kHz store makes an 8 kHz model, and its files say so
    eight = tmp_path / "8k"
    r = train(store_8k, eight, "tiny", RECIPE, RunOptions(max_steps=1, **QUIET))
    assert r.model.cfg.audio == AudioConfig(sample_rate=8000)
    assert load_checkpoint(r.best)[0].cfg.audio.sample_rate == 8000
    config = json.loads((eight / "config.json").read_text())
    assert config["model"]["audio"]["sample_rate"] == 8000
    with pytest.raises(DeepSynthError, match="8000 Hz.*4000 Hz"):
        train(store, eight, None, None, RunOptions(max_steps=2, resume="always", **QUIET))
    r = train(store_8k, eight, None, None, RunOptions(max_steps=2, resume="always", **QUIET))
    assert r.step == 2 and r.model.cfg.audio.sample_rate == 8000


def test_train_package_functions_are_short_and_hold_no_closures():
    package = Path(__file__).parents[1] / "src" / "deepsynth" / "train"
    functions = ast.FunctionDef | ast.AsyncFunctionDef
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, functions):
                continue
            where = f"{path.name}:{node.lineno} {node.name}"
            assert node.end_lineno - node.lineno + 1 <= 50, where
            inner = [n.name for n in ast.walk(node) if n is not node and isinstance(n, functions)]
            assert not inner, f"{where} defines {inner}"
