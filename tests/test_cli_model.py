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
