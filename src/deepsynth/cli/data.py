"""Sub-commands of the training data: `data build` (MIDI corpus -> store) and `data stats`."""

from __future__ import annotations

import json
import sys

from deepsynth.config import AudioConfig
from deepsynth.errors import DeepSynthError

DEFAULT_RATE = AudioConfig().sample_rate


def _sim_config(args):
    from deepsynth.config import SimConfig

    if args.sample_rate <= 0:
        raise DeepSynthError(f"sample rate must be positive, got {args.sample_rate}")
    return SimConfig(audio=AudioConfig(sample_rate=args.sample_rate), pedal=args.pedal)


def cmd_build(args) -> int:
    from tqdm import tqdm

    from deepsynth.cli.common import output_store
    from deepsynth.data.build import build_store

    cfg = _sim_config(args)
    output_store(args.out)  # a file, a place that cannot be written, a foreign manifest: refused
    state: dict = {"bar": None, "failed": [], "rebuilt": 0}

    def on_start(n: int) -> None:
        state["bar"] = tqdm(total=n, unit="song", file=sys.stderr, disable=args.quiet or n < 2,
                            dynamic_ncols=True, desc="build")

    def on_result(r) -> None:
        state["bar"].update()
        if not r.ok:
            state["failed"].append(r)
        elif r.reason:
            state["rebuilt"] += 1

    try:
        report = build_store(
            args.corpus, args.out, sim=cfg, soundfont=args.soundfont, seed=args.seed,
            workers=args.workers, limit=args.limit, scheduler=args.scheduler,
            on_start=on_start, on_result=on_result,
        )
    finally:
        if state["bar"] is not None:
            state["bar"].close()
        failed = state["failed"]
        if failed:
            total = state["bar"].total if state["bar"] is not None else len(failed)
            print(f"skipped {len(failed)} of {total} songs:", file=sys.stderr)
            for r in sorted(failed, key=lambda r: r.midi):
                print(f"  {r.reason}" if r.reason.startswith(r.midi) else f"  {r.midi}: {r.reason}",
                      file=sys.stderr)

    songs = report.manifest["songs"]
    sr = report.manifest["sample_rate"]
    hours = sum(s["n_samples"] for s in songs) / sr / 3600
    by_split = {name: sum(s["split"] == name for s in songs) for name in ("train", "val", "test")}
    warned = sum(bool(r.meta and r.meta.get("warnings")) for r in report.results if r.ok)
    if not args.quiet:
        print(f"{args.out}: {len(songs)} songs ({len(report.built)} built, "
              f"{len(report.verified)} already there and verified), {hours:.2f} h of audio, "
              f"{sum(s['segments'] for s in songs):,} segments")
        print(f"  splits (songs): train {by_split['train']}, val {by_split['val']}, "
              f"test {by_split['test']} (seed {args.seed})")
        if state["rebuilt"]:
            print(f"  rebuilt {state['rebuilt']} songs whose stored files were damaged or stale")
        if warned:
            print(f"  {warned} songs have simulator warnings (in their meta.json)")
        if report.failed:
            print(f"  skipped {len(report.failed)} songs (reasons above)")
        print(f"  manifest: {report.root / 'manifest.json'}")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cmd_stats(args) -> int:
    from deepsynth.data.store import store_stats

    stats = store_stats(args.store)
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"{'split':<6} {'songs':>6} {'hours':>7} {'segments':>9} {'changes/s':>10}")
    for name, row in stats["splits"].items():
        print(f"{name:<6} {row['songs']:>6} {row['hours']:>7.2f} {row['segments']:>9,} "
              f"{row['key_changes_per_second']:>10.2f}")
    seg = stats["segments"]
    print(f"store {stats['root']}: {_size(stats['size_bytes'])} on disk "
          f"(audio {_size(stats['audio_bytes'])}), {stats['sample_rate']} Hz, "
          f"{seg['window_seconds']:g} s segments with {seg['overlap_seconds']:g} s overlap, "
          f"split seed {stats['seed']}, {stats['skipped']} songs skipped at build")
    return 0


def register(sub) -> None:
    """Add `data` (with `build` and `stats`) to the `deepsynth` sub-command parser."""
    p = sub.add_parser("data", help="training data: build the store from a MIDI corpus, stats",
                       description="The training data: simulate a MIDI corpus into a compact "
                       "store (audio + key-state changes per song, a manifest with splits).")
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    b = dsub.add_parser("build", help="MIDI corpus -> training store (resumable)",
                        description="Simulate every song of a corpus and store its audio and "
                        "key-state changes, split 60/20/20 by song. Re-running continues an "
                        "interrupted build: intact songs are verified by checksum and kept. "
                        "Songs that cannot be simulated are skipped and listed; the exit code "
                        "is 2 only if no song could be built.")
    b.add_argument("--corpus", required=True, metavar="DIR",
                   help="corpus folder: a metadata.csv (column midi, optional composer and "
                        "title) or .mid/.midi files in it and its sub-folders")
    b.add_argument("--out", default="data/piano", metavar="DIR",
                   help="store folder (default: data/piano)")
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="songs simulated in parallel on this machine (default 1)")
    b.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N songs of the corpus")
    b.add_argument("--sample-rate", type=int, default=DEFAULT_RATE, metavar="HZ",
                   help=f"audio sample rate (default {DEFAULT_RATE})")
    b.add_argument("--soundfont", metavar="PATH",
                   help="SoundFont (.sf2) for the piano (default: TimGM6mb.sf2 from pretty_midi)")
    b.add_argument("--pedal", choices=("extend", "raw"), default="extend",
                   help="extend: notes sound (and show) until the sustain pedal lifts (default); "
                        "raw: notes end at key-up")
    b.add_argument("--seed", type=int, default=0, help="seed of the split by song (default 0)")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the songs on a Dask distributed cluster (e.g. tcp://host:8786); "
                        "its workers must see the corpus and the store at the same paths")
    b.add_argument("-q", "--quiet", action="store_true", help="print only skipped songs and errors")
    b.set_defaults(func=cmd_build)

    s = dsub.add_parser("stats", help="songs, hours and segments per split of a built store",
                        description="Songs, hours and segments per split, key changes per "
                        "second, and the store's size on disk.")
    s.add_argument("store", metavar="DIR", help="store folder (as given to data build --out)")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s.set_defaults(func=cmd_stats)
