"""Building the store: layout, checksums, skipped songs, resume after a crash, Dask."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepsynth.config import SimConfig
from deepsynth.data import store
from deepsynth.data.build import build_store, find_corpus, song_id
from deepsynth.data.segments import SegmentConfig, n_segments
from deepsynth.data.splits import split_of
from deepsynth.data.toy import write_toy_corpus
from deepsynth.errors import DeepSynthError
from deepsynth.sim.compose import demo_piece, midi_bytes
from deepsynth.sim.simulate import simulate


@pytest.fixture
def corpus(tmp_path):
    write_toy_corpus(tmp_path / "corpus", n_songs=3, bars=4, corrupt=1)
    return tmp_path / "corpus"


def song_files(root: Path) -> dict[str, float]:
    """mtime of every array file, by path relative to the store."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in sorted((root / store.SONGS_DIR).glob("*/*.npy"))}


def test_song_ids_come_from_the_path():
    assert song_id("midis/Albeniz/alb_esp1.mid") == "Albeniz-alb_esp1"
    assert song_id("top.mid") == "top"
    assert song_id("Bach/BWV 846 (prelude).mid") == "Bach-BWV_846__prelude_"


def test_build_layout_checksums_and_skipped_song(corpus, tmp_path):
    out = tmp_path / "store"
    report = build_store(corpus, out)
    assert [r.status for r in report.results] == ["failed", "built", "built", "built"]
    assert "Toy/broken0.mid" in report.failed[0].reason
    assert "corrupt" in report.failed[0].reason

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == store.read_manifest(out)
    assert [s["id"] for s in manifest["songs"]] == ["Toy-piece0", "Toy-piece1", "Toy-piece2"]
    assert manifest["skipped"] == [{"id": "Toy-broken0", "midi": "Toy/broken0.mid",
                                    "reason": report.failed[0].reason}]
    seg = SegmentConfig()
    for row in manifest["songs"]:
        folder = out / "songs" / row["id"]
        assert sorted(p.name for p in folder.iterdir()) == [
            "audio.npy", "meta.json", "starts.npy", "states.npy"]
        meta, why = store.verify_song(folder)
        assert why == "" and meta["checksum"] == row["checksum"]
        assert row["split"] == split_of(row["id"], 0)
        assert row["segments"] == n_segments(row["n_samples"], seg.window(4000), seg.hop(4000))
        assert meta["composer"] == "Toy" and meta["title"] == row["id"].split("-")[1]
        assert meta["source_sha256"] == store.hashlib.sha256(
            (corpus / row["midi"]).read_bytes()).hexdigest()
        # the arrays are memory-mappable and hold exactly what the simulator computed
        song = store.open_song(folder)
        assert isinstance(song.audio, np.memmap) and song.audio.dtype == np.int16
        sim = simulate(corpus / row["midi"], SimConfig())
        assert np.array_equal(song.audio, sim.audio.audio)
        assert song.key_changes().equals(sim.changes)
        assert song.packed_states.shape == (len(sim.changes), 11)
        assert (folder / "audio.npy").stat().st_size < 2 * row["n_samples"] + 200


def test_resume_rebuilds_only_what_is_missing_or_damaged(corpus, tmp_path):
    out = tmp_path / "store"
    for i in range(3, 5):  # 5 good songs
        (corpus / "Toy" / f"piece{i}.mid").write_bytes(midi_bytes(demo_piece(bars=3, seed=i)))
    first = build_store(corpus, out)
    assert len(first.built) == 5
    before = song_files(out)
    manifest_before = store.read_manifest(out)
    time.sleep(0.01)

    songs = out / "songs"
    (songs / "Toy-piece0" / "audio.npy").unlink()  # a file lost
    states = songs / "Toy-piece1" / "states.npy"  # a file damaged
    data = bytearray(states.read_bytes())
    data[-1] ^= 0xFF
    states.write_bytes(bytes(data))
    shutil.rmtree(songs / "Toy-piece2")  # killed before this song's folder was renamed in
    (songs / ".tmp-Toy-piece2-deadbeef").mkdir()  # .. leaving its half-written folder
    (songs / ".tmp-Toy-piece2-deadbeef" / "audio.npy").write_bytes(b"half")
    (songs / ".old-Toy-piece3-cafe0000").mkdir()
    (out / "manifest.json").unlink()

    again = build_store(corpus, out)
    status = {r.id: (r.status, r.reason) for r in again.results}
    assert status["Toy-piece0"] == ("built", "rebuilt: audio.npy missing")
    assert status["Toy-piece1"] == ("built", "rebuilt: states.npy checksum mismatch")
    assert status["Toy-piece2"] == ("built", "")
    assert status["Toy-piece3"][0] == status["Toy-piece4"][0] == "verified"
    assert status["Toy-broken0"][0] == "failed"
    after = song_files(out)
    assert after.keys() == before.keys()
    rebuilt = {k for k in after if after[k] != before[k]}
    assert {k.split("/")[1] for k in rebuilt} == {"Toy-piece0", "Toy-piece1", "Toy-piece2"}
    assert not [p for p in songs.iterdir() if p.name.startswith(".")]  # leftovers cleaned
    assert store.read_manifest(out) == manifest_before  # same content, deterministic

    third = build_store(corpus, out)
    assert len(third.verified) == 5 and not third.built
    assert song_files(out) == after


def test_changed_source_or_settings_rebuild(corpus, tmp_path):
    out = tmp_path / "store"
    build_store(corpus, out)
    (corpus / "Toy" / "piece1.mid").write_bytes(midi_bytes(demo_piece(bars=4, seed=99)))
    r = build_store(corpus, out)
    assert {x.id for x in r.built} == {"Toy-piece1"}
    assert "another source" in r.built[0].reason
    r = build_store(corpus, out, sim=SimConfig(pedal="raw"))
    assert len(r.built) == 3  # other settings: everything is rebuilt
    assert store.read_manifest(out)["sim_config"]["pedal"] == "raw"


def test_split_of_a_song_stays_when_a_song_is_added(corpus, tmp_path):
    out = tmp_path / "store"
    before = {s["id"]: s["split"] for s in build_store(corpus, out, seed=7).manifest["songs"]}
    for i in range(3, 9):
        (corpus / "Toy" / f"piece{i}.mid").write_bytes(midi_bytes(demo_piece(bars=3, seed=i)))
    after = {s["id"]: s["split"] for s in build_store(corpus, out, seed=7).manifest["songs"]}
    assert len(after) == 9
    assert all(after[k] == v for k, v in before.items())


def test_all_bad_corpus_fails_and_writes_no_manifest(tmp_path):
    write_toy_corpus(tmp_path / "bad", n_songs=0, corrupt=2)
    (tmp_path / "bad" / "Toy" / "empty.mid").write_bytes(b"")
    with pytest.raises(DeepSynthError, match="no song could be built: all 3 failed"):
        build_store(tmp_path / "bad", tmp_path / "store")
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_corpus_with_metadata_csv_and_limit(tmp_path):
    corpus = tmp_path / "corpus"
    write_toy_corpus(corpus, n_songs=3, bars=3)
    (corpus / "metadata.csv").write_text(
        "composer,title,year,midi,duration\n"
        "Anon,Second,1900,Toy/piece1.mid,6.0\n"
        "Anon,First,1900,Toy/piece0.mid,8.0\n"
        "Anon,Missing,1900,Toy/gone.mid,8.0\n")
    sources = find_corpus(corpus)
    assert [(s.id, s.composer, s.title) for s in sources] == [
        ("Toy-piece1", "Anon", "Second"), ("Toy-piece0", "Anon", "First"),
        ("Toy-gone", "Anon", "Missing")]
    report = build_store(corpus, tmp_path / "store")
    assert [r.status for r in report.results] == ["built", "built", "failed"]
    assert report.failed[0].reason == "Toy/gone.mid: no such file"
    report = build_store(corpus, tmp_path / "store2", limit=1)
    assert [s["title"] for s in report.manifest["songs"]] == ["Second"]


def test_bad_inputs(tmp_path):
    with pytest.raises(DeepSynthError, match="corpus folder not found"):
        build_store(tmp_path / "nope", tmp_path / "store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepSynthError, match="no MIDI files"):
        build_store(tmp_path / "empty", tmp_path / "store")
    write_toy_corpus(tmp_path / "c", n_songs=1)
    with pytest.raises(DeepSynthError, match="SoundFont"):
        build_store(tmp_path / "c", tmp_path / "store", soundfont=tmp_path / "c" / "Toy" /
                    "piece0.mid")
    write_toy_corpus(tmp_path / "d" / "x", n_songs=1)
    write_toy_corpus(tmp_path / "d" / "y", n_songs=1)
    with pytest.raises(DeepSynthError, match="would both be song 'Toy-piece0'"):
        find_corpus(tmp_path / "d")
    with pytest.raises(DeepSynthError, match="not a built store"):
        store.read_manifest(tmp_path)


def test_build_imports_neither_pyav_nor_torch(corpus, tmp_path):
    code = ("import sys; from deepsynth.data.build import build_store; "
            f"build_store({str(corpus)!r}, {str(tmp_path / 'store')!r}); "
            "print(sorted(m for m in ('av', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dask_local_cluster_builds_the_same_store(corpus, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    inline = build_store(corpus, tmp_path / "inline")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        report = build_store(corpus, tmp_path / "dask", scheduler=client)
        assert [r.status for r in report.results] == ["failed", "built", "built", "built"]
        again = build_store(corpus, tmp_path / "dask", scheduler=client)
        assert len(again.verified) == 3
    assert report.manifest == inline.manifest  # same checksums, splits, segments


def test_kill_9_mid_build_then_resume(tmp_path):
    corpus = tmp_path / "corpus"
    write_toy_corpus(corpus, n_songs=6, bars=16)  # ~30 s of audio each
    out = tmp_path / "store"
    code = ("from deepsynth.cli import main; "
            f"main(['data', 'build', '--corpus', {str(corpus)!r}, '--out', {str(out)!r}, '-q'])")
    proc = subprocess.Popen([sys.executable, "-c", code],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    songs = out / "songs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if songs.is_dir() and any(not p.name.startswith(".") for p in songs.iterdir()):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in songs.iterdir() if not p.name.startswith("."))
    assert len(done) >= 1 and not (out / "manifest.json").exists()
    report = build_store(corpus, out)
    assert sorted(r.id for r in report.verified) == done  # finished songs kept
    assert len(report.built) == 6 - len(done)
    assert len(store.read_manifest(out)["songs"]) == 6
