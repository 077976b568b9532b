"""`deepsynth sweep table1`: the stand-ins mirror Table 1, and a tiny sweep writes its table."""

import json

import pytest

from deepsynth.cli import main
from deepsynth.data.build import build_store
from deepsynth.data.toy import write_toy_corpus
from deepsynth.evaluate.sweep import STANDINS, default_presets, run_sweep
from deepsynth.evaluate.table1 import PAPER_TABLE1
from deepsynth.model.presets import PRESETS, get_preset


def test_standins_keep_the_papers_layers_and_l2_at_an_eighth_of_the_width():
    assert len(STANDINS) == len(PAPER_TABLE1) == 7
    for name, (preset, row) in STANDINS.items():
        assert preset.l2 == row.l2 == get_preset(row.preset).l2
        assert preset.model.decoder.layers == row.layers == preset.model.encoder.layers
        assert preset.model.decoder.residual_channels * 8 == row.channels
        assert name.startswith(f"cpu-{row.layers}x{row.channels // 8}")
    assert default_presets("cuda") == [r.preset for r in PAPER_TABLE1]
    assert default_presets("cpu") == list(STANDINS)
    assert get_preset("cpu-27x32").model.decoder.residual_channels == 32


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweepstore")
    # ids hash to 0.81, 0.41, 0.28: piece0 -> val (2 segments), piece1, piece2 -> train (7)
    write_toy_corpus(tmp / "corpus", n_songs=3, bars=5)
    build_store(tmp / "corpus", tmp / "store", fractions=(0.5, 0.5, 0.0))
    return tmp / "store"


def test_tiny_sweep_writes_the_table(store, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    result = run_sweep(store, out, budget_minutes=0.01, presets=["tiny"], device="cpu",
                       progress=False)
    (row,) = result["rows"]
    assert row["preset"] == "tiny" and row["stands_for"] is None and row["paper_val_ce"] is None
    assert row["steps"] >= 1 and row["val_ce"] > 0 and row["train_ce"] > 0
    assert (out / "tiny" / "best.pt").is_file()
    assert "| tiny | – | 0.0001 | 3 | 8 |" in (out / "table1.md").read_text()
    assert json.loads((out / "table1.json").read_text())["rows"][0]["preset"] == "tiny"


@pytest.mark.slow
def test_a_standin_trains_and_sits_beside_its_paper_row(store, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    result = run_sweep(store, out, budget_minutes=0.01, presets=["cpu-15x16-l2e-2"],
                       device="cpu", progress=False)
    (row,) = result["rows"]
    assert row["stands_for"] == "paper-15x128-l2e-2" and row["l2"] == 1e-2
    assert row["paper_train_ce"] == 2.23 and row["paper_val_ce"] == 2.87
    assert row["steps"] >= 1 and row["val_ce"] > 0 and row["train_ce"] > 0
    md = (out / "table1.md").read_text()
    assert "| cpu-15x16-l2e-2 | paper-15x128-l2e-2 | 0.01 | 15 | 16 | 1 |" in md
    assert "CPU stand-ins" not in md  # named explicitly: not the default stand-in sweep
    assert "cpu-15x16-l2e-2" not in PRESETS


def test_sweep_bad_input(store, tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main(["sweep", "table1", "--data", str(tmp_path / "none"), "--budget-minutes", "1",
                 "-o", out]) == 2
    assert "no such store" in capsys.readouterr().err
    assert main(["sweep", "table1", "--data", str(store), "--budget-minutes", "0", "-o", out]) == 2
    assert "--budget-minutes" in capsys.readouterr().err
    assert main(["sweep", "table1", "--data", str(store), "--budget-minutes", "1",
                 "--presets", "nope", "-o", out, "--device", "cpu"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["sweep", "table1", "--data", str(store), "--budget-minutes", "1",
                 "--val-segments", "0", "-o", out, "--device", "cpu"]) == 2
    assert "val_segments must be positive" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
