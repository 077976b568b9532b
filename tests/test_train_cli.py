"""`deepsynth train` end to end: help, a short run, kill -9 and --resume, one-line errors."""

import subprocess
import sys
import time

import pytest

from deepsynth.checkpoint import read_payload
from deepsynth.cli import main
from deepsynth.errors import DeepSynthError
from deepsynth.train import RunOptions, train
from deepsynth.train.logs import read_metrics

SHORT = ["--window-seconds", "1", "--overlap-seconds", "0", "--val-segments", "6",
         "--val-every", "4", "--threads", "1", "--log-every", "1"]
RECIPE = {"window_seconds": 1.0, "overlap_seconds": 0.0, "val_segments": 6, "val_every": 4,
          "log_every": 1}




def test_help_lists_the_recipe_and_run_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--preset", "--out", "--epochs", "--max-steps", "--max-minutes",
                 "--device", "--seed", "--resume", "--val-every", "--no-video", "--precision",
                 "--no-compile", "--shard-mb", "--checkpoint-every", "--l2"):
        assert flag in text


def test_train_end_to_end(store, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(store), "--preset", "tiny", "--out", str(out),
               "--max-steps", "5", *SHORT, "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "stopped (max_steps) at step 5" in captured.out and "best val CE" in captured.out
    assert {"last.pt", "best.pt", "metrics.csv", "loss.png", "tb"} <= {p.name
                                                                       for p in out.iterdir()}
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4, 5]
    # resume without repeating the preset; recipe flags not given are the checkpoint's
    rc = main(["train", "--data", str(store), "--out", str(out), "--resume", "--max-steps", "7",
               "--threads", "1", "-q", "--no-tensorboard"])
    assert rc == 0 and "at step 7" in capsys.readouterr().out
    assert read_payload(out / "last.pt")["extra"]["train_config"]["window_seconds"] == 1.0


def one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("deepsynth: error:"), err
    return err


def test_errors_exit_2_with_one_line(store, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(store), "--out", str(out), *SHORT, "-q", "--no-tensorboard"]
    assert "nothing to resume" in one_line_error(capsys, [*base, "--resume", "--max-steps", "2"])
    assert main([*base, "--preset", "tiny", "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert "already holds a run" in one_line_error(capsys, [*base, "--preset", "tiny"])
    (out / "last.pt").write_bytes(b"\x00garbage" * 100)  # a corrupt last.pt
    err = one_line_error(capsys, [*base, "--resume", "--max-steps", "4"])
    assert "last.pt" in err and "corrupt" in err
    err = one_line_error(capsys, [*base, "--auto-resume", "--max-steps", "4"])
    assert "last.pt" in err  # --auto-resume does not start afresh over a damaged run either
    assert "unknown preset" in one_line_error(capsys, ["train", "--data", str(store), "--out",
                                                       str(tmp_path / "x"), "--preset", "nope"])
    assert "no such store" in one_line_error(capsys, ["train", "--data", str(tmp_path / "none"),
                                                      "--out", str(tmp_path / "y"),
                                                      "--preset", "tiny"])


def test_kill_9_then_resume_matches_an_uninterrupted_run(store, tmp_path):
    out = tmp_path / "killed"
    # rows every 2 steps, last.pt every 3: the kill leaves a half-filled metrics window
    cmd = [sys.executable, "-m", "deepsynth", "train", "--data", str(store), "--out", str(out),
           *SHORT, "--log-every", "2", "-q", "--no-tensorboard", "--checkpoint-every", "3"]
    proc = subprocess.Popen([*cmd, "--preset", "tiny", "--max-steps", "500"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "last.pt").exists():
                try:
                    if read_payload(out / "last.pt")["extra"]["step"] >= 5:
                        break
                except DeepSynthError:
                    pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.kill()  # SIGKILL: no chance to save anything
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    saved = read_payload(out / "last.pt")["extra"]["step"]
    target = saved + 5
    r = subprocess.run([*cmd, "--resume", "--max-steps", str(target)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    straight = tmp_path / "straight"
    train(store, straight, "tiny", dict(RECIPE, log_every=2),
          RunOptions(max_steps=target, threads=1, progress=False, tensorboard=False))
    a, b = ([row for row in read_metrics(run / "metrics.csv") if row["train_ce"] is not None]
            for run in (straight, out))
    steps = [row["step"] for row in b]
    assert steps == [row["step"] for row in a] == list(range(2, target + 1, 2))  # none lost
    for ra, rb in zip(a, b, strict=True):
        assert rb["train_ce"] == pytest.approx(ra["train_ce"], rel=1e-6, abs=1e-7)


def test_init_from_starts_a_fresh_run_from_a_checkpoints_weights(store, tmp_path, capsys):
    import torch

    from deepsynth.checkpoint import export_checkpoint, load_checkpoint

    first = tmp_path / "first"
    assert main(["train", "--data", str(store), "--preset", "tiny", "--out", str(first),
                 "--max-steps", "3", *SHORT, "-q", "--no-tensorboard"]) == 0
    shipped = tmp_path / "shipped.pt"
    export_checkpoint(first / "best.pt", shipped)  # float16, like the shipped model
    weights = load_checkpoint(shipped)[0].state_dict()
    capsys.readouterr()

    # step 0 of a fresh run from the exported file: the same weights (float16 -> float32)
    second = tmp_path / "second"
    assert main(["train", "--data", str(store), "--init-from", str(shipped), "--out",
                 str(second), "--max-steps", "1", "--lr", "1e-12", "--lr-min", "1e-12", *SHORT,
                 "-q", "--no-tensorboard"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    payload = read_payload(second / "last.pt")
    assert payload["train_state"]["step"] == 1  # the run's own steps, from 0
    assert payload["extra"]["preset"] == "tiny"  # the checkpoint's preset by default
    assert payload["extra"]["init_from"] == {"path": str(shipped), "preset": "tiny", "step": 3}
    assert payload["extra"]["train_config"]["lr"] == 1e-12  # the run's own recipe
    after = payload["model"]
    for name, value in weights.items():  # one step at lr 1e-12 leaves them where they were
        assert after[name].dtype == torch.float32
        torch.testing.assert_close(after[name], value, atol=1e-6, rtol=0)
    # a run folder works too (its best.pt); a resume keeps the record
    third = tmp_path / "third"
    assert main(["train", "--data", str(store), "--init-from", str(first), "--out", str(third),
                 "--max-steps", "2", *SHORT, "-q", "--no-tensorboard"]) == 0
    assert main(["train", "--data", str(store), "--out", str(third), "--resume", "--max-steps",
                 "3", "--threads", "1", "-q", "--no-tensorboard"]) == 0
    assert read_payload(third / "last.pt")["extra"]["init_from"]["path"] == str(first / "best.pt")
    capsys.readouterr()

    base = ["train", "--data", str(store), *SHORT, "-q", "--no-tensorboard"]
    err = one_line_error(capsys, [*base, "--init-from", str(shipped), "--preset", "small",
                                  "--out", str(tmp_path / "x")])
    assert "holds preset 'tiny', not 'small'" in err
    err = one_line_error(capsys, [*base, "--init-from", str(shipped), "--out", str(third),
                                  "--resume"])
    assert "--init-from starts a fresh run" in err
    err = one_line_error(capsys, [*base, "--init-from", str(tmp_path / "none.pt"), "--out",
                                  str(tmp_path / "y")])
    assert "checkpoint not found" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_camera_mix_is_part_of_the_recipe(store, tmp_path, capsys):
    out = tmp_path / "cam"
    base = ["train", "--data", str(store), "--preset", "tiny", *SHORT, "-q", "--no-tensorboard"]
    assert main([*base, "--out", str(out), "--max-steps", "2", "--camera-mix", "0.5",
                 "--input-noise", "1.5"]) == 0
    recipe = read_payload(out / "last.pt")["extra"]["train_config"]
    assert recipe["camera_mix"] == 0.5 and recipe["input_noise"] == 1.5
    capsys.readouterr()
    assert "camera mix must be <= 1" in one_line_error(
        capsys, [*base, "--out", str(tmp_path / "x"), "--camera-mix", "2"])
    assert "--no-resident-data" in one_line_error(
        capsys, [*base, "--out", str(tmp_path / "y"), "--camera-mix", "0.5", "--resident-data"])
