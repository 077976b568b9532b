"""Sub-command: play (DeepSynth as an instrument: key presses in, the model's sound out, live)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from deepsynth.cli.common import output_file, warn
from deepsynth.errors import DeepSynthError

MIDI_SUFFIXES = (".mid", ".midi")


def _list_ports() -> int:
    from deepsynth.generate.devices import midi_ports

    names = midi_ports()
    if not names:
        print("no MIDI input ports")
    for i, name in enumerate(names):
        print(f"{i}: {name}")
    return 0


def _list_devices() -> int:
    from deepsynth.generate.devices import audio_devices

    devices = audio_devices()
    if not devices:
        print("no sound card outputs")
    for d in devices:
        mark = " (default)" if d["default"] else ""
        print(f"{d['index']}: {d['name']}, {d['channels']} channels, {d['rate']:g} Hz{mark}")
    return 0


def _check(args) -> None:
    """Refuse bad options before anything is loaded."""
    if args.block < 1 or args.block > 4000:
        raise DeepSynthError(f"--block must be from 1 to 4000 samples, got {args.block}")
    if not args.max_latency > 0:
        raise DeepSynthError(f"--max-latency must be positive, got {args.max_latency}")
    if args.duration is not None and not args.duration > 0:
        raise DeepSynthError(f"--duration must be positive, got {args.duration}")
    if args.midi_file is not None:
        p = Path(args.midi_file)
        if p.suffix.lower() not in MIDI_SUFFIXES:
            raise DeepSynthError(f"{p}: --midi-file takes a MIDI file (.mid, .midi)")
        if not p.exists():
            raise DeepSynthError(f"{p}: no such file")
    if args.midi_file is not None and args.port is not None:
        raise DeepSynthError("give a MIDI file (--midi-file) or a port (--port), not both")
    if args.null and args.device is not None:
        raise DeepSynthError("--null plays on no sound card: leave out --device")
    if args.clock != "real" and not args.null:
        raise DeepSynthError(f"--clock {args.clock} does not run in real time: add --null")
    if args.clock != "real" and args.midi_file is None:
        raise DeepSynthError(f"--clock {args.clock} needs a piece known in advance: "
                             "--midi-file")
    if args.threads is not None and args.threads < 1:
        raise DeepSynthError(f"--threads must be at least 1, got {args.threads}")
    if args.spin is not None and not args.spin >= 0:
        raise DeepSynthError(f"--spin must be 0 ms or more, got {args.spin}")
    if args.spin is not None and args.clock != "real":
        raise DeepSynthError(f"--spin is for the real clock, not --clock {args.clock}")


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM ends the session as Ctrl-C does (where nothing else handles it already)."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave it as it is
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_play(args) -> int:
    if args.list_ports:
        return _list_ports()
    if args.list_devices:
        return _list_devices()
    _check(args)
    report_path = output_file(args.report, (".json",)) if args.report else None
    wav_path = output_file(args.output, (".wav",)) if args.output else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        with contextlib.suppress(Exception):
            import numba

            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    from deepsynth.api import open_input
    from deepsynth.cli.generate import load_model, sampling_floor, sampling_temperature
    from deepsynth.generate import devices, live

    if not args.null:  # a missing extra or library: say so before the model loads
        devices.require_sound()
    if args.midi_file is None:
        devices.require_midi()

    model, payload, ckpt = load_model(args.checkpoint)
    temperature = sampling_temperature(args.temperature, payload)
    floor = sampling_floor(args.floor, payload)
    if not 0 <= args.seed < 2**32:
        raise DeepSynthError(f"seed must be from 0 to {2**32 - 1}, got {args.seed}")
    sr = model.cfg.audio.sample_rate
    duration = None if args.duration is None else int(round(args.duration * sr))

    # the input: a MIDI file at real time, or a port
    if args.midi_file is not None:
        src = open_input(args.midi_file, sr)
        ch = src.changes
        n = ch.n_samples if duration is None else min(duration, ch.n_samples)
        source = live.ChangesInput(ch.starts, ch.states, n)
        what = f"{args.midi_file} ({n / sr:.1f} s)"
    else:
        source = devices.PortInput(args.port, duration)
        what = f"MIDI port {source.name!r}"

    sinks, card = [], None
    if args.clock == "real":
        clock = live.RealClock(None if args.spin is None else args.spin / 1000.0)
    else:
        clock = {"simulated": live.SimulatedClock, "cpu": live.CpuClock}[args.clock]()
    status_on = not args.quiet and (args.status or sys.stderr.isatty())

    def on_status(meter, now) -> None:
        print(f"\r{meter.status(now)}\x1b[K", end="", file=sys.stderr, flush=True)

    gen = live.LiveGenerator(model, temperature, args.seed, block=args.block,
                             horizon=max(args.horizon, args.block),
                             background=args.background, floor=floor)
    gen.warm_up()  # the kernel loads (from numba's cache) before the clock starts
    stack = contextlib.ExitStack()
    report = None
    interrupted = False
    began = time.perf_counter()
    try:
        with stack:
            stack.callback(gen.close)
            stack.callback(source.close)
            if not args.null:
                card = devices.CardSink(sr, args.device)
                stack.callback(card.close)
                sinks.append(card)
            if wav_path is not None:
                from deepsynth.audio import StreamingWavWriter

                sinks.append(stack.enter_context(StreamingWavWriter(wav_path, sr)))
            if not args.quiet:
                where = ", ".join(filter(None, [
                    f"sound card {card.name!r} at {card.rate} Hz" if card else None,
                    str(wav_path) if wav_path else None])) or "nothing (--null)"
                print(f"playing {what} -> {where}; block {args.block} samples "
                      f"({args.block / sr * 1000:g} ms), lookahead {gen.lookahead} samples "
                      f"({gen.lookahead / sr * 1000:g} ms); Ctrl-C stops", file=sys.stderr)
            session = live.Session(gen, source, sinks, clock, args.max_latency,
                                   on_status if status_on else None)
            with _sigterm_stops():
                try:
                    report = session.run()
                except KeyboardInterrupt:  # the way a live session ends: keep what was played
                    interrupted = True
                    report = session.meter.report()
    finally:
        if status_on:
            print(file=sys.stderr)
    seconds = time.perf_counter() - began
    report = {
        "checkpoint": str(ckpt), "input": what, "seed": args.seed, "temperature": temperature,
        "floor": floor,
        "clock": args.clock, "spin_ms": args.spin, "generated_seconds": round(gen.t / sr, 4),
        "wall_seconds": round(seconds, 3), "lookahead_samples": gen.lookahead,
        "lookahead_ms": round(gen.lookahead / sr * 1000, 4), "horizon": gen.horizon,
        "background": args.background, "interrupted": interrupted,
        "conditioning_calls": gen.cond_calls,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **report,
    }
    if card is not None:
        report["card"] = {"name": card.name, "rate": card.rate, "latency_ms":
                          round(card.latency * 1000, 2), "underflows": card.underflows}
    if report_path is not None:
        from deepsynth.atomic import atomic_write_text

        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    if interrupted:
        warn(f"stopped after {gen.t / sr:.1f} s" + (f"; kept {wav_path}" if wav_path else ""))
    if not args.quiet:
        lat, comp = report["latency_ms"], report["headroom"]
        line = f"{report['generated_seconds']:.1f} s played, {report['changes']} key changes"
        if lat.get("count"):
            line += f": latency p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f} ms"
        if comp.get("count"):
            line += f"; compute {comp['mean']:.0%} of the block time (p99 {comp['p99']:.0%})"
        line += f"; underruns {report['underruns']}"
        if report["underruns"] and "underruns_stalled" in report:
            line += (f" ({report['underruns_stalled']} while the system held the core: "
                     f"{report['off_cpu_ms']:g} ms off it)")
        print(line)
    return 0  # Ctrl-C (or SIGTERM) is how a live session ends


def register(sub) -> None:
    """Add `play` to the `deepsynth` sub-command parser."""
    from deepsynth.generate.defaults import DEFAULT_BLOCK, DEFAULT_HORIZON, DEFAULT_MAX_LATENCY_MS

    p = sub.add_parser(
        "play",
        help="play the model live: key presses (a MIDI keyboard or file) in, sound out",
        description="DeepSynth as an instrument: the keys pressed on a MIDI keyboard (or in a "
        "MIDI file played in real time) become the keyboard video's frames, and the model's "
        "sound comes out block by block, on the sound card and/or into a wav file. For the "
        "same key changes and seed the audio is the same as `deepsynth synthesize` makes, "
        "sample for sample. The latency of every key change and the compute time of every "
        "block are measured (--report).",
    )
    src = p.add_argument_group("input (default: the first MIDI input port)")
    src.add_argument("--midi-file", metavar="FILE", help="play a MIDI file in real time")
    src.add_argument("--port", metavar="PORT", help="MIDI input port: its number or part of "
                     "its name (see --list-ports)")
    src.add_argument("--list-ports", action="store_true", help="list MIDI input ports, exit")
    out = p.add_argument_group("output (default: the sound card)")
    out.add_argument("-o", "--output", metavar="OUT.wav",
                     help="also write the audio to a wav file as it plays (renamed into place "
                     "at the end, a valid file after Ctrl-C too)")
    out.add_argument("--null", action="store_true", help="no sound card (measuring, or -o only)")
    out.add_argument("--device", metavar="DEV", help="sound card output: its number or part of "
                     "its name (see --list-devices)")
    out.add_argument("--list-devices", action="store_true",
                     help="list sound card outputs, exit")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="trained model (default: the checkpoint shipped with DeepSynth)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the checkpoint's recommended one)")
    p.add_argument("--floor", type=float, default=None,
                   help="sampling floor (default: the checkpoint's recommended one, else 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK, metavar="N",
                   help=f"samples generated at a time (default {DEFAULT_BLOCK}): the latency is "
                   "about block + lookahead + compute")
    p.add_argument("--horizon", type=int, default=DEFAULT_HORIZON, metavar="N",
                   help="samples of conditioning computed ahead per call "
                   f"(default {DEFAULT_HORIZON})")
    p.add_argument("--background", action="store_true",
                   help="compute the conditioning in a thread of its own (by default the "
                        "decoder's thread does: with the compiled conditioning that was faster, "
                        "no late block in 5 minutes against 12 with the thread)")
    p.add_argument("--max-latency", type=float, default=DEFAULT_MAX_LATENCY_MS, metavar="MS",
                   help="the output stream's delay behind the keys: a block ready later is "
                   f"counted as an underrun (default {DEFAULT_MAX_LATENCY_MS:g} ms)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: the file's end, or Ctrl-C)")
    p.add_argument("--clock", choices=("real", "simulated", "cpu"), default="real",
                   help="real (default); simulated: no waiting, the timing of a real run "
                   "(checks, with --null); cpu: time is this process's CPU time, as if it "
                   "had a core of its own (measuring on a shared machine, with --null)")
    p.add_argument("--spin", type=float, default=None, metavar="MS",
                   help="on the real clock, sleep between blocks and poll only the last MS "
                   "before each one (default: poll all the time, a busy core: a sleeping "
                   "core can wake late, by over 10 ms on a virtual machine; 0: sleep)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch and numba threads (default: as they are)")
    p.add_argument("--report", metavar="FILE.json",
                   help="write the latency, compute and underrun figures (p50/p99/max) here")
    p.add_argument("--status", action="store_true",
                   help="show the live status line even when stderr is not a terminal")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line or summary")
    p.set_defaults(func=cmd_play)
