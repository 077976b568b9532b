"""`deepsynth sweep table1`: the stand-ins mirror Table 1, and a tiny sweep writes its table."""

import json

import pytest
import torch

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
    assert "rows are CPU stand-ins" in md  # the table says what a cpu-* row is
    assert "cpu-15x16-l2e-2" in PRESETS  # a registered preset (it was "not in": stale)


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
    assert "--val-segments: val segments must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# --- steps, seeds, slices and the table made from the run folders ---------------------------

SWEEP = ["sweep", "table1", "--presets", "tiny", "--device", "cpu", "--threads", "1",
         "--val-segments", "2", "--val-every", "4", "--steps", "12", "-q"]
TIMING = ("time_s", "samples_per_s")  # measured, not computed: they differ between runs


class VirtualClock:
    """The slices' clock: 100 s pass at every reading, so one chunk fits in a 7.5 min slice."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 100.0
        return self.t


def test_a_run_cut_into_three_slices_ends_identical_to_an_uncut_one(store, tmp_path,
                                                                     monkeypatch, capsys):
    from deepsynth.checkpoint import load_checkpoint
    from deepsynth.evaluate import sweep
    from deepsynth.evaluate.plots import read_metrics_csv

    uncut, cut = tmp_path / "uncut", tmp_path / "cut"
    assert main([*SWEEP, "--data", str(store), "-o", str(uncut)]) == 0
    monkeypatch.setattr(sweep, "_now", VirtualClock())
    steps = []
    for _ in range(3):  # each slice: one chunk of 4 steps, ending at a validation
        assert main([*SWEEP, "--data", str(store), "--slice-minutes", "7.5",
                     "--peak-tflops", "0.5", "-o", str(cut)]) == 0
        steps.append(json.loads((cut / "table1.json").read_text())["rows"][0]["steps"])
    assert steps == [4, 8, 12]
    assert "run the same command again" not in capsys.readouterr().out.split("table:")[-1]
    # a fourth slice has nothing left to do
    assert main([*SWEEP, "--data", str(store), "--slice-minutes", "7.5", "-o", str(cut)]) == 0
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(uncut / "tiny" / name)[0].state_dict()
        b = load_checkpoint(cut / "tiny" / name)[0].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    rows_a = read_metrics_csv(uncut / "tiny" / "metrics.csv")
    rows_b = read_metrics_csv(cut / "tiny" / "metrics.csv")
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == list(range(1, 13))
    # validations after every epoch (2 steps) and every 4 steps: none added by the cuts
    assert [r["step"] for r in rows_b if r["val_ce"] is not None] == [2, 4, 6, 8, 10, 12]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING} == \
            {k: v for k, v in rb.items() if k not in TIMING}
    # samples/s and MFU per slice, in the run folder
    thr = json.loads((cut / "tiny" / "throughput.json").read_text())
    assert [c["steps"] for c in thr["chunks"]] == [[0, 4], [4, 8], [8, 12]]
    assert thr["flops_per_step"] > 0 and thr["samples_per_s"] > 0 and thr["steps"] == 12
    for c in thr["chunks"]:
        assert c["samples_per_s"] > 0 and c["mfu"] == pytest.approx(c["achieved_tflops"] / 0.5)
    assert thr["mfu"] > 0
    # the table knows what made it
    commands = (cut / "commands.txt").read_text().splitlines()
    assert len(commands) == 2 and "--peak-tflops 0.5" in commands[0]  # once each


def test_slices_end_early_and_say_so(store, tmp_path, monkeypatch, capsys):
    from deepsynth.evaluate import sweep

    monkeypatch.setattr(sweep, "_now", VirtualClock())
    result = run_sweep(store, tmp_path / "s", presets=["tiny"], device="cpu", steps=8,
                       slice_minutes=7.5, threads=1, progress=False,
                       config={"val_segments": 2, "val_every": 4})
    assert result["finished"] is False and result["trained"][0]["stopped"] == "slice"
    assert result["rows"][0]["steps"] == 4


def test_seeds_and_the_table_of_existing_runs(store, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main([*SWEEP, "--data", str(store), "--steps", "4", "--seeds", "0", "3",
                 "-o", str(out)]) == 0
    assert (out / "tiny" / "metrics.csv").is_file() and (out / "tiny-seed3" / "best.pt").is_file()
    assert json.loads((out / "tiny-seed3" / "config.json").read_text())["train"]["seed"] == 3
    (out / "table1.md").unlink()
    capsys.readouterr()
    assert main(["sweep", "table1", "--tabulate", "-o", str(out)]) == 0  # no --data: no training
    shown = capsys.readouterr().out
    assert "| tiny | – | 0.0001 | 3 | 8 | 4 | 0 |" in shown
    assert "| tiny | – | 0.0001 | 3 | 8 | 4 | 3 |" in shown
    md = (out / "table1.md").read_text()
    assert "## At equal steps: 4 steps" in md and "![](table1.png)" in md
    assert (out / "table1.png").stat().st_size > 1000
    assert "deepsynth sweep table1 --tabulate -o" in md  # the commands that made it
    assert "--seeds 0 3" in md
    table = json.loads((out / "table1.json").read_text())
    assert [(r["preset"], r["seed"]) for r in table["rows"]] == [("tiny", 0), ("tiny", 3)]
    assert table["rows"][0]["val_ce"] != table["rows"][1]["val_ce"]  # other seed, other run
    assert main(["sweep", "table1", "--tabulate", "-o", str(tmp_path / "none")]) == 2
    assert "no such sweep folder" in capsys.readouterr().err


def test_the_papers_own_numbers_bear_out_its_claims():
    from deepsynth.evaluate.table1 import check_claims

    def rows(change=None):
        out = []
        for r in PAPER_TABLE1:
            train, val = (change or {}).get(r.preset, (r.train_ce, r.val_ce))
            out.append({"preset": r.preset, "stands_for": r.preset, "train_ce": train,
                        "val_ce": val})
        return out

    verdicts = [c["verdict"] for c in check_claims(rows())]
    assert verdicts == ["holds", "holds", "holds"]
    # 1e-5 no longer overfits; 512 channels gain as much as depth
    claims = check_claims(rows({"paper-15x128-l2e-5": (1.65, 2.30),
                                "paper-27x512": (1.00, 1.90)}))
    assert claims[0]["verdict"] == "holds in part" and claims[0]["underfits"]
    assert not claims[0]["overfits"]
    assert claims[1]["verdict"] == "does not hold"
    assert claims[2]["verdict"] == "does not hold"
    assert check_claims(rows()[:2])[1]["verdict"] == "not measured"
