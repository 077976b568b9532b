"""`deepsynth data build` and `deepsynth data stats` end to end on a tiny corpus."""

import json
import os
from pathlib import Path

import pytest

from deepsynth.cli import main
from deepsynth.data.segments import n_segments
from deepsynth.data.toy import write_toy_corpus

CORPUS = Path("/work/shared/data/piano-midi")


def test_build_and_stats_skip_a_corrupt_file(tmp_path, capsys):
    write_toy_corpus(tmp_path / "corpus", n_songs=3, bars=4, corrupt=1)
    out = tmp_path / "piano"
    rc = main(["data", "build", "--corpus", str(tmp_path / "corpus"), "--out", str(out),
               "--workers", "2", "--seed", "5"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "skipped 1 of 4 songs:" in captured.err
    assert "Toy/broken0.mid: truncated or corrupt MIDI file" in captured.err
    assert f"{out}: 3 songs (3 built, 0 already there and verified)" in captured.out
    assert "(seed 5)" in captured.out

    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    songs = manifest["songs"]
    assert stats["splits"]["all"]["songs"] == 3 and stats["skipped"] == 1
    assert stats["seed"] == 5 and stats["sample_rate"] == 4000
    assert sum(stats["splits"][s]["songs"] for s in ("train", "val", "test")) == 3
    assert stats["splits"]["all"]["segments"] == sum(
        n_segments(s["n_samples"], 20_000, 12_000) for s in songs)
    hours = sum(s["n_samples"] for s in songs) / 4000 / 3600
    assert stats["splits"]["all"]["hours"] == pytest.approx(hours, abs=1e-4)
    assert stats["splits"]["all"]["key_changes_per_second"] > 0
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert stats["size_bytes"] == on_disk and stats["audio_bytes"] < on_disk

    assert main(["data", "stats", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["split", "songs", "hours", "segments", "changes/s"]
    assert [line.split()[0] for line in table[1:5]] == ["train", "val", "test", "all"]
    assert table[4].split()[1] == "3"

    # a second run verifies instead of rebuilding
    rc = main(["data", "build", "--corpus", str(tmp_path / "corpus"), "--out", str(out),
               "--seed", "5"])
    assert rc == 0
    assert "(0 built, 3 already there and verified)" in capsys.readouterr().out


def test_all_bad_corpus_exits_2(tmp_path, capsys):
    write_toy_corpus(tmp_path / "bad", n_songs=0, corrupt=2)
    rc = main(["data", "build", "--corpus", str(tmp_path / "bad"), "--out",
               str(tmp_path / "piano")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "skipped 2 of 2 songs:" in err
    assert "deepsynth: error: no song could be built: all 2 failed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["data", "build", "--corpus", "{tmp}/missing"], "corpus folder not found"),
    (["data", "build", "--corpus", "{tmp}", "--workers", "0"], "workers must be at least 1"),
    (["data", "build", "--corpus", "{tmp}", "--sample-rate", "0"], "sample rate must be"),
    (["data", "stats", "{tmp}"], "not a built store"),
    (["data", "stats", "{tmp}/missing"], "no such store directory"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    write_toy_corpus(tmp_path, n_songs=1, bars=2)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[1] == "build":
        argv += ["--out", str(tmp_path / "piano")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_build_on_a_local_dask_cluster(tmp_path, capsys):
    distributed = pytest.importorskip("dask.distributed")
    write_toy_corpus(tmp_path / "corpus", n_songs=2, bars=3, corrupt=1)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster:
        rc = main(["data", "build", "--corpus", str(tmp_path / "corpus"), "--out",
                   str(tmp_path / "piano"), "--scheduler", cluster.scheduler_address])
    captured = capsys.readouterr()
    assert rc == 0
    assert "2 songs (2 built" in captured.out and "broken0.mid" in captured.err


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_dir(), reason="the piano-midi corpus is not here")
def test_real_corpus_first_songs(tmp_path, capsys):
    out = tmp_path / "piano"
    rc = main(["data", "build", "--corpus", str(CORPUS), "--out", str(out), "--limit", "4",
               "--workers", str(min(2, os.cpu_count() or 1))])
    assert rc == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["all"]["songs"] == 4
    assert stats["splits"]["all"]["hours"] > 0.1
    assert stats["size_bytes"] < 1.05 * stats["audio_bytes"] + 100_000
