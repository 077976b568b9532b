"""Sub-command: synthesize (video or MIDI in, generated piano audio out)."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path

from deepsynth.cli.common import output_dir, output_file, output_targets, warn
from deepsynth.errors import DeepSynthError
from deepsynth.generate.defaults import POSTFILTER_GAIN

OUT_SUFFIXES = (".wav", ".mp4")


def default_checkpoint() -> Path:
    from deepsynth.api import default_checkpoint

    return default_checkpoint()


def load_model(checkpoint: str | None):
    """(model, payload, path) of --checkpoint: a file, a run folder (its best.pt) or, by
    default, the shipped model."""
    from deepsynth.api import checkpoint_path
    from deepsynth.checkpoint import load_checkpoint

    path = checkpoint_path(checkpoint)
    model, payload = load_checkpoint(path)
    return model, payload, path


def sampling_temperature(requested: float | None, payload: dict) -> float:
    """The temperature asked for, else the one recorded in the checkpoint at export, else 1."""
    from deepsynth.api import recommended_temperature

    return recommended_temperature(requested, payload)


def sampling_floor(requested: float | None, payload: dict) -> float:
    """The sampling floor asked for, else the one recorded in the checkpoint at export, else 0."""
    from deepsynth.api import recommended_floor

    return recommended_floor(requested, payload)


FLOOR_HELP = ("sampling floor: subtracted from every class's probability before drawing, "
              "so classes rarer than it (the noise) are never drawn; 0: plain sampling "
              "(default: the one the checkpoint recommends, else 0)")


POSTFILTER_HELP = ("harmonic post-filter: the gain of the sound away from the partials of the "
                   "notes the video shows (0.2 = -14 dB; 1: off, the model's raw output, what "
                   "`deepsynth play` gives)")


def _check_output(args) -> None:
    """Several inputs need a directory: refuse a file name before any work is done."""
    n = len(args.inputs)
    if n > 1 and Path(args.output).suffix.lower() in OUT_SUFFIXES:
        raise DeepSynthError(f"-o {args.output}: {n} inputs make {n} files: give a directory")


def _targets(args, n_inputs: int) -> list[Path]:
    inputs = [Path(i) for i in args.inputs]
    if n_inputs == 1 and Path(args.output).suffix.lower() in OUT_SUFFIXES:
        return [output_file(args.output, OUT_SUFFIXES)]
    if n_inputs == 1 and Path(args.output).suffix:
        raise DeepSynthError(f"{args.output}: output must end in .wav or .mp4 (or be a directory)")
    out = output_dir(args.output)
    names = [p.stem for p in inputs]
    if len(set(names)) < len(names):  # e.g. song.mid and song.mp4: keep the input's kind
        names = [f"{p.stem}-{p.suffix.lstrip('.').lower()}" for p in inputs]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return output_targets(out / f"{n}.{args.format}" for n in names)


def cmd_synthesize(args) -> int:
    _check_output(args)
    from tqdm import tqdm

    from deepsynth.api import generate_with, generation_model, open_input, source_window
    from deepsynth.audio import StreamingWavWriter
    from deepsynth.generate.outputs import write_mp4

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DeepSynthError("--device cuda: no CUDA device is available here")
    # on the CPU, a model packed before (a cache file named after the checkpoint's SHA-256)
    # generates without importing torch, the same audio (generate/packed.py)
    pack, model, payload, ckpt = generation_model(args.checkpoint, args.device)
    sr = pack.sample_rate if pack is not None else model.cfg.audio.sample_rate
    args.temperature = sampling_temperature(args.temperature, payload)
    args.floor = sampling_floor(args.floor, payload)
    sources = [open_input(p, sr) for p in args.inputs]
    for src in sources:
        for warning in src.warnings:
            print(f"warning: {src.path}: {warning}", file=sys.stderr)
    windows = [source_window(s, args.start, args.duration) for s in sources]
    targets = _targets(args, len(sources))
    total = max(w.length for w in windows)
    bar = tqdm(
        total=total,
        unit="sample",
        unit_scale=True,
        file=sys.stderr,
        disable=args.quiet,
        desc=f"generating {len(sources)} x {total / sr:.1f} s",
    )
    began = time.perf_counter()
    with ExitStack() as stack:
        wavs = [
            stack.enter_context(StreamingWavWriter(t, sr)) if t.suffix.lower() == ".wav"
            else None
            for t in targets
        ]

        def on_chunk(pieces) -> None:
            for wav, piece in zip(wavs, pieces, strict=True):
                if wav is not None:
                    wav.write(piece)
            bar.update(max(len(p) for p in pieces))
            rate = bar.n / max(time.perf_counter() - began, 1e-9)
            bar.set_postfix_str(f"{rate / sr:.1f}x real time")

        try:
            audio = generate_with(pack, model, sources, windows, args.temperature, args.seed,
                                  on_chunk=on_chunk, device=args.device, floor=args.floor,
                                  postfilter=args.postfilter)
        except KeyboardInterrupt:
            bar.close()
            kept = [str(t) for t, w in zip(targets, wavs, strict=True)
                    if w is not None and not w.replaces]
            left = [str(t) for t, w in zip(targets, wavs, strict=True)
                    if w is not None and w.replaces]
            warn(f"interrupted: kept what was generated in {', '.join(kept) or 'nothing'}"
                 + (f"; left the earlier {', '.join(left)} as it was" if left else ""))
            raise
    bar.close()
    seconds = time.perf_counter() - began
    for target, src, window, pcm in zip(targets, sources, windows, audio, strict=True):
        if target.suffix.lower() == ".mp4":
            write_mp4(target, src, window, pcm, lossless=args.lossless)
        if not args.quiet:
            print(f"{target}  {window.length / sr:.1f} s generated")
    if not args.quiet:
        samples = sum(w.length for w in windows)
        print(
            f"{samples / seconds:,.0f} samples/s = {samples / seconds / sr:.1f}x real time "
            f"({ckpt.name}, temperature {args.temperature}, floor {args.floor:g}, "
            f"post-filter {args.postfilter:g}, seed {args.seed})"
        )
    return 0


def register(sub) -> None:
    """Add `synthesize` to the `deepsynth` sub-command parser."""
    p = sub.add_parser(
        "synthesize",
        help="generate the piano's audio for a keyboard video (or a MIDI file)",
        description="Generate audio sample by sample with a trained model. INPUT is a keyboard "
        "video (mp4 from `deepsynth simulate`) or a MIDI file (simulated on the fly). Several "
        "inputs are generated together as one batch.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video (.mp4) or MIDI (.mid)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="OUT.wav (generated audio) or OUT.mp4 (the video with the generated "
        "sound); a directory for several inputs",
    )
    p.add_argument(
        "--format",
        choices=("wav", "mp4"),
        default="wav",
        help="what to write per input when OUT is a directory (default wav)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="trained model (default: the checkpoint shipped with DeepSynth)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature; 0 picks the most likely sample (default: the one the "
        "checkpoint recommends, else 1)",
    )
    p.add_argument("--floor", type=float, default=None, help=FLOOR_HELP)
    p.add_argument("--postfilter", type=float, default=POSTFILTER_GAIN, metavar="GAIN",
                   help=POSTFILTER_HELP + f" (default {POSTFILTER_GAIN:g})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to generate (default cpu)"
    )
    p.add_argument(
        "--start",
        type=float,
        default=0.0,
        metavar="S",
        help="start this many seconds into the piece (default 0)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="seconds to generate (default: to the end)"
    )
    p.add_argument("--lossless", action="store_true",
                   help="an mp4 OUT in the exact gray stream (780x57, lossless H.264 High 4:4:4, "
                        "bit for bit) instead of the format every player opens")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_synthesize)
