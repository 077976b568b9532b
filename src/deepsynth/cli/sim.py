"""Sub-commands of the piano simulator: simulate, video2midi."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deepsynth.cli.common import (
    EXIT_BAD_INPUT,
    output_dir,
    output_file,
    output_targets,
    protect_inputs,
    warn,
)
from deepsynth.config import AudioConfig
from deepsynth.errors import DeepSynthError

DEFAULT_RATE = AudioConfig().sample_rate

MIDI_SUFFIXES = (".mid", ".midi")


def expand_midi_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; directories searched recursively for .mid/.midi files."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            midis = sorted(q for q in p.rglob("*") if q.suffix.lower() in MIDI_SUFFIXES)
            if not midis:
                raise DeepSynthError(f"{p}: directory has no MIDI files (.mid, .midi)")
            found += midis
        elif not p.exists():
            raise DeepSynthError(f"{p}: no such file or directory")
        else:
            found.append(p)
    return found


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names: the file stem, prefixed by its folder where two stems collide."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}-{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


def _sim_config(args):
    from deepsynth.config import SimConfig

    if args.sample_rate <= 0:
        raise DeepSynthError(f"sample rate must be positive, got {args.sample_rate}")
    return SimConfig(audio=AudioConfig(sample_rate=args.sample_rate), pedal=args.pedal)


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--soundfont", metavar="PATH",
                   help="SoundFont (.sf2) for the piano (default: TimGM6mb.sf2 from pretty_midi)")
    p.add_argument("--pedal", choices=("extend", "raw"), default="extend",
                   help="extend: notes sound (and show) until the sustain pedal lifts (default); "
                        "raw: notes end at key-up")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_RATE, metavar="HZ",
                   help=f"audio sample rate (default {DEFAULT_RATE})")


def _simulate_one(job: tuple) -> tuple[str, dict | None, str | None]:
    midi, out, name, cfg, soundfont, fps, any_instrument, camera, lossless = job
    from deepsynth.sim.simulate import simulate_to_files

    try:
        meta = simulate_to_files(midi, out, name, cfg, soundfont, fps, any_instrument, camera,
                                 lossless)
        return str(midi), meta, None
    except DeepSynthError as e:
        return str(midi), None, str(e)


def cmd_simulate(args) -> int:
    from tqdm import tqdm

    from deepsynth.sim.synth import load_soundfont

    cfg = _sim_config(args)
    load_soundfont(args.soundfont)  # a bad SoundFont fails before any work
    if args.fps is not None and args.fps <= 0:
        raise DeepSynthError(f"--fps must be positive, got {args.fps}")
    midis = expand_midi_inputs(args.inputs)
    out = output_dir(args.output)
    if args.camera is not None and args.camera < 0:
        raise DeepSynthError(f"--camera takes a seed >= 0, got {args.camera}")
    if args.camera is not None and args.lossless:
        raise DeepSynthError("--camera films the keyboard lossily: it takes no --lossless")
    jobs = [(m, out, n, cfg, args.soundfont, args.fps, args.any_instrument, args.camera,
             args.lossless) for m, n in zip(midis, _unique_names(midis), strict=True)]
    protect_inputs(midis)
    output_targets(out / f"{job[2]}.{ext}" for job in jobs for ext in ("mp4", "wav", "json"))
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(jobs), unit="song", disable=len(jobs) < 2 or args.quiet, file=sys.stderr)
    if args.workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers) as pool:
            results = pool.map(_simulate_one, jobs)
            done = _collect(results, bar, failures, args.quiet)
    else:
        done = _collect(map(_simulate_one, jobs), bar, failures, args.quiet)
    bar.close()
    if len(jobs) == 1 and failures:
        raise DeepSynthError(failures[0][1])
    if failures:
        print(f"{len(failures)} of {len(jobs)} songs failed:", file=sys.stderr)
        for midi, reason in failures:
            print(f"  {reason}" if reason.startswith(midi) else f"  {midi}: {reason}",
                  file=sys.stderr)
    if len(jobs) > 1 and not args.quiet:
        print(f"wrote {done} of {len(jobs)} songs to {out}/")
    return EXIT_BAD_INPUT if failures else 0


def _collect(results, bar, failures, quiet) -> int:
    done = 0
    for midi, meta, error in results:
        bar.update()
        if error is not None:
            failures.append((midi, error))
            continue
        done += 1
        for w in meta["warnings"]:
            warn(f"{midi}: {w}")
        if meta["clipped"]:
            warn(f"{midi}: scaled by {meta['clip_scale']:.3f} so it does not clip")
        if not quiet:
            bar.write(f"{meta['outputs'][0]}  {meta['seconds']:.1f} s, {meta['n_notes']} notes, "
                      f"{meta['n_key_changes']} frames (+ .wav, .json)")
    return done


def cmd_video2midi(args) -> int:
    from deepsynth.sim.keystates import notes_from_key_changes
    from deepsynth.sim.midi import write_midi
    from deepsynth.sim.video import read_keys

    if args.sample_rate <= 0:
        raise DeepSynthError(f"sample rate must be positive, got {args.sample_rate}")
    out = output_file(args.output, MIDI_SUFFIXES)
    reading = read_keys(args.video, sample_rate=args.sample_rate)
    for warning in reading.warnings:
        print(f"warning: {args.video}: {warning}", file=sys.stderr)
    changes = reading.changes
    notes = notes_from_key_changes(changes)
    write_midi(notes, out, sample_rate=changes.sample_rate)
    print(f"{out}: {len(notes)} notes from {len(changes)} key states "
          f"({changes.n_samples / changes.sample_rate:.1f} s)")
    return 0


def register(sub) -> None:
    """Add simulate and video2midi to the `deepsynth` sub-command parser."""
    p = sub.add_parser("simulate", help="MIDI -> keyboard video (mp4) + ground-truth audio (wav)",
                       description="Simulate a piano: for each MIDI file write OUT/SONG.mp4 "
                       "(keyboard video with sound), OUT/SONG.wav (ground truth) and "
                       "OUT/SONG.json (metadata).")
    p.add_argument("inputs", nargs="+", metavar="SONG.mid|DIR",
                   help="MIDI files, or directories searched for them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output directory")
    _add_sim_options(p)
    p.add_argument("--fps", type=float, metavar="N",
                   help="constant frame rate like a camera (default: one frame per key change "
                        "at its exact time)")
    p.add_argument("--camera", type=int, metavar="SEED",
                   help="camera mode: the keyboard as a camera films it (drawn from SEED: frame "
                        "size, place, tilt, shades, blur, noise, lossy yuv420p H.264); the "
                        "parameters go into the metadata")
    p.add_argument("--lossless", action="store_true",
                   help="write the exact picture (780x57 gray, lossless H.264 High 4:4:4) that "
                        "decodes bit for bit, instead of the format every player opens (H.264 "
                        "High yuv420p, 780x58, which DeepSynth reads back exactly too)")
    p.add_argument("--any-instrument", action="store_true",
                   help="play notes of non-piano instruments on the piano too")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="songs simulated in parallel (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("video2midi", help="keyboard video -> MIDI (the reference decoder)",
                       description="Read the pressed keys from every frame of a keyboard video "
                       "and write them as a MIDI file.")
    p.add_argument("video", metavar="VIDEO.mp4")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mid")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_RATE, metavar="HZ",
                   help=f"time grid for videos not written by DeepSynth (default "
                        f"{DEFAULT_RATE}; a video DeepSynth wrote keeps its own)")
    p.set_defaults(func=cmd_video2midi)


