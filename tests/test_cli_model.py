import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "deepsynth", *args], capture_output=True,
                          text=True, timeout=300)


def test_info_json_for_a_preset_reports_paper_receptive_field():
    r = run("info", "--preset", "paper-15x128", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["rf_samples"] == 575 and abs(info["rf_ms"] - 143.75) < 0.1
    assert info["params"] > 1_000_000 and info["macs_per_sample"] > 0


def test_info_table_and_bad_preset():
    r = run("info", "--preset", "tiny")
    assert r.returncode == 0 and "tiny" in r.stdout and "RF" in r.stdout
    bad = run("info", "--preset", "nope")
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_export_makes_a_small_float16_checkpoint_with_its_record(tmp_path):
    import torch

    from deepsynth.checkpoint import load_checkpoint, read_payload, save_checkpoint
    from deepsynth.model.deepsynth import DeepSynth
    from deepsynth.model.presets import get_preset
    from deepsynth.sim import keyboard

    torch.manual_seed(0)
    model = DeepSynth(get_preset("small").model, keyboard.layout())
    opt = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "best.pt", model, extra={"preset": "small", "step": 7,
                                                        "val_ce": 4.5}, optimizer=opt.state_dict())
    r = run("export", str(tmp_path / "best.pt"), "-o", str(tmp_path / "ship.pt"))
    assert r.returncode == 0, r.stderr
    assert "small after 7 steps, validation CE 4.5000" in r.stdout
    payload = read_payload(tmp_path / "ship.pt")
    assert "optimizer" not in payload and payload["extra"]["weights"] == "float16"
    assert (tmp_path / "ship.pt").stat().st_size < 0.6 * (tmp_path / "best.pt").stat().st_size
    shipped, _ = load_checkpoint(tmp_path / "ship.pt")
    for (name, a), b in zip(model.state_dict().items(), shipped.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a.half().float(), b, msg=name)
    bad = run("export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.pt"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
