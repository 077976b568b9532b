"""Sub-command: demo, the one-command tour (what `make demo` runs).

Compose a short piece, simulate it (keyboard video + ground-truth audio, at the model's sample
rate), generate its sound from the video alone with the shipped checkpoint (or a given one), and
write everything a person wants to see and hear.
"""

from __future__ import annotations

import json
import sys
import time

from deepsynth.cli.common import output_dir, output_targets, warn
from deepsynth.cli.generate import (
    FLOOR_HELP,
    POSTFILTER_HELP,
    default_checkpoint,
    load_model,
    sampling_floor,
    sampling_temperature,
)
from deepsynth.generate.defaults import POSTFILTER_GAIN

DEMO_FILES = ("demo.mid", "ground_truth.wav", "ground_truth.mp4", "generated.wav", "demo.mp4",
              "comparison.png", "demo.json")


def cmd_demo(args) -> int:
    from tqdm import tqdm

    from deepsynth.atomic import atomic_write_text
    from deepsynth.audio import write_wav
    from deepsynth.config import SimConfig
    from deepsynth.sim.compose import write_demo_midi
    from deepsynth.sim.keystates import notes_from_key_changes
    from deepsynth.sim.simulate import simulate
    from deepsynth.sim.video import write_video

    out = output_dir(args.output)
    output_targets(out / name for name in DEMO_FILES)  # a user's file there is not replaced
    model = None
    if args.checkpoint is not None or default_checkpoint().exists():
        from deepsynth.generate import packed

        model, payload, ckpt = load_model(args.checkpoint)
        packed.store(model, ckpt, payload.get("extra"))  # so `synthesize` starts without torch
        args.temperature = sampling_temperature(args.temperature, payload)
        args.floor = sampling_floor(args.floor, payload)
    midi = out / "demo.mid"
    write_demo_midi(midi)
    # the piece is simulated at the model's audio representation (its sample rate)
    sim = simulate(midi, SimConfig() if model is None else SimConfig(audio=model.cfg.audio))
    sr = sim.cfg.audio.sample_rate
    truth = sim.audio.audio
    write_wav(out / "ground_truth.wav", truth, sr)
    write_video(out / "ground_truth.mp4", sim.changes, truth)
    n_notes = len(sim.piece.notes)
    print(f"DeepSynth demo: a {sim.seconds:.1f} s piece the project composed ({n_notes} "
          f"notes, both hands), simulated as a {len(sim.changes)}-frame keyboard video")
    print(f"  score                {midi}")
    print(f"  video + true sound   {out / 'ground_truth.mp4'}")
    print(f"  true sound           {out / 'ground_truth.wav'}")

    if model is None:
        warn(f"no trained checkpoint shipped at {default_checkpoint()}: nothing to generate")
        return 0
    from deepsynth.evaluate.plots import spectrogram_comparison_plot
    from deepsynth.evaluate.transcriber import missing_reason, transcription_f1
    from deepsynth.generate.generator import Window, generate
    from deepsynth.generate.outputs import write_mp4
    from deepsynth.generate.sources import source_from_changes

    source = source_from_changes(sim.changes, midi, kind="midi")
    bar = tqdm(total=sim.changes.n_samples, unit="sample", unit_scale=True, file=sys.stderr,
               desc="generating the sound from the video")
    began = time.perf_counter()
    generated = generate(model, [source], temperature=args.temperature, seed=args.seed,
                         on_chunk=lambda pieces: bar.update(len(pieces[0])),
                         floor=args.floor, postfilter=args.postfilter)[0]
    seconds = time.perf_counter() - began
    bar.close()
    write_wav(out / "generated.wav", generated, sr)
    write_mp4(out / "demo.mp4", source, Window(0, len(generated)), generated)
    plot = spectrogram_comparison_plot(generated, truth, sr, out / "comparison.png",
                                       title="DeepSynth demo: ground truth vs generated from video")
    speed = len(generated) / seconds / sr
    extra = payload.get("extra", {}) if isinstance(payload, dict) else {}
    summary = {
        "seconds": round(sim.seconds, 3),
        "checkpoint": str(ckpt),
        "checkpoint_extra": {k: v for k, v in extra.items() if isinstance(v, int | float | str)},
        "generation_seconds": round(seconds, 2),
        "x_real_time": round(speed, 2),
        "temperature": args.temperature,
        "floor": args.floor,
        "postfilter": args.postfilter,
        "seed": args.seed,
    }
    print(f"  video + GENERATED    {out / 'demo.mp4'}")
    print(f"  generated sound      {out / 'generated.wav'}")
    print(f"  spectrograms         {plot}")
    print(f"generated {sim.seconds:.1f} s in {seconds:.1f} s = {speed:.1f}x real time "
          f"({ckpt.name})")
    reason = missing_reason()
    if reason is None:
        notes = notes_from_key_changes(sim.changes)  # what the video shows
        gen_f1 = transcription_f1(generated, sr, notes)
        true_f1 = transcription_f1(truth, sr, notes)
        summary["onset_f1_generated"] = gen_f1["onset"]["f1"]
        summary["onset_f1_ground_truth"] = true_f1["onset"]["f1"]
        print(f"transcription onset F1 (basic-pitch vs the video's notes): generated "
              f"{gen_f1['onset']['f1']:.2f}, ground truth {true_f1['onset']['f1']:.2f} (ceiling)")
    else:
        print(f"transcription F1: skipped ({reason})")
    atomic_write_text(out / "demo.json", json.dumps(summary, indent=2) + "\n")
    return 0


def register(sub) -> None:
    """Add `demo` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "demo", help="the one-command demo (what `make demo` runs)",
        description="Compose a short piece, simulate its keyboard video and true sound, generate "
        "the sound from the video with a trained model, and write demo/ (videos, wavs, plot).",
    )
    p.add_argument("-o", "--output", default="demo", metavar="OUTDIR",
                   help="output directory (default: demo)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="trained model (default: the checkpoint shipped with DeepSynth)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the one the checkpoint recommends, "
                        "else 1)")
    p.add_argument("--floor", type=float, default=None, help=FLOOR_HELP)
    p.add_argument("--postfilter", type=float, default=POSTFILTER_GAIN, metavar="GAIN",
                   help=POSTFILTER_HELP + f" (default {POSTFILTER_GAIN:g})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)
