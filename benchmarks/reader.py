"""The key reader on camera-mode videos of test excerpts, beside the clean video of the same
excerpt and the reference path: video2midi note onset F1, the generated audio's onset F1 (the
shipped model, transcribed by basic-pitch when installed: `make eval-deps`), and the reader's
time per frame against the generation time. Appends a JSON line to benchmarks/results/reader.jsonl
and writes the table to docs/reader.md (--doc).

    python benchmarks/reader.py --data data/piano --excerpts 10 --seconds 10 --doc docs/reader.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, append_result  # noqa: E402

FPS_CYCLE = (None, 30.0, 25.0, 60.0)  # None: a frame at every key change


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "piano"))
    ap.add_argument("--excerpts", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--doc", help="write the markdown table here")
    args = ap.parse_args()

    import torch

    from deepsynth.checkpoint import load_checkpoint
    from deepsynth.cli.generate import default_checkpoint, sampling_floor, sampling_temperature
    from deepsynth.evaluate import metrics, transcriber
    from deepsynth.evaluate.excerpts import choose_excerpts, sim_config_of, store_soundfont
    from deepsynth.generate.generator import generate
    from deepsynth.generate.sources import open_source
    from deepsynth.reader import read_video_keys
    from deepsynth.sim.camera import FRAME_SIZES, Camera, random_camera
    from deepsynth.sim.keystates import notes_from_key_changes
    from deepsynth.sim.synth import render_notes
    from deepsynth.sim.video import (
        is_simulator_picture,
        iter_frames,
        read_keys,
        write_camera_video,
        write_video,
    )

    torch.set_num_threads(1)
    model, payload = load_checkpoint(default_checkpoint())
    temperature = sampling_temperature(None, payload)
    floor = sampling_floor(None, payload)
    judged = transcriber.available()
    cfg = sim_config_of(args.data)
    sf_path, _ = store_soundfont(args.data)
    chosen = choose_excerpts(args.data, "test", args.excerpts, args.seconds, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, ex in enumerate(chosen):
            size = FRAME_SIZES[i % len(FRAME_SIZES)]
            fps = FPS_CYCLE[i % len(FPS_CYCLE)]
            cam = Camera(random_camera(args.seed * 1000 + i, size))
            shown = ex.notes()
            row = {"excerpt": ex.name, "camera_seed": cam.cfg.seed, "size": list(size),
                   "fps": fps, "notes": len(shown)}
            for kind in ("clean", "camera"):
                path = Path(tmp) / f"{i}-{kind}.mp4"
                if kind == "clean":
                    write_video(path, ex.changes)
                else:
                    write_camera_video(path, ex.changes, cam, fps=fps)
                t0 = time.perf_counter()
                frames = sum(1 for _ in iter_frames(path))
                t1 = time.perf_counter()
                # what read_keys does with the one-pass reader: the simulator's own picture
                # through its layout, any other video through read_video_keys
                reading = read_keys(path) if is_simulator_picture(path) else \
                    read_video_keys(path)
                t2 = time.perf_counter()
                two_pass = read_keys(path)  # sim.video.read_keys as it is (two passes)
                two_pass_s = time.perf_counter() - t2
                decoded = notes_from_key_changes(reading.changes)
                src = open_source(path, model.cfg.audio.sample_rate)
                t3 = time.perf_counter()
                gen = generate(model, [src], temperature=temperature, seed=0,
                               floor=floor)[0][: ex.length]
                t4 = time.perf_counter()
                row[kind] = {
                    "frames": frames, "decode_s_per_frame": (t1 - t0) / frames,
                    "read_s_per_frame": (t2 - t1) / frames, "generate_s": t4 - t3,
                    "read_keys_s_per_frame": two_pass_s / frames,
                    "same_as_read_keys": bool(two_pass.changes.equals(reading.changes)),
                    "read_over_generate": (t2 - t1) / (t4 - t3),
                    "video2midi_onset_f1": metrics.note_scores(shown, decoded)["onset"]["f1"],
                    "warnings": list(reading.warnings),
                }
                if judged:
                    ref = render_notes(decoded, cfg, sf_path, n_samples=ex.length).audio
                    row[kind] |= {
                        "generated_onset_f1": transcriber.transcription_f1(
                            gen, ex.sample_rate, shown)["onset"]["f1"],
                        "reference_onset_f1": transcriber.transcription_f1(
                            ref, ex.sample_rate, shown)["onset"]["f1"]}
            if judged:
                row["truth_onset_f1"] = transcriber.transcription_f1(
                    ex.truth, ex.sample_rate, shown)["onset"]["f1"]
            rows.append(row)
            print(_line(row), flush=True)
    summary = _summary(rows)
    append_result("reader", {"excerpts": len(rows), "seconds": args.seconds,
                             "temperature": temperature, "floor": floor, "summary": summary,
                             "rows": rows})
    if args.doc:
        doc = Path(args.doc)
        old = doc.read_text() if doc.exists() else ""
        kept = old[old.index("\n## ") + 1:] if "\n## " in old else ""  # later sections stay
        doc.write_text(_markdown(rows, summary, args) + ("\n" + kept if kept else ""))
    print(summary)


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _line(r: dict) -> str:
    c, k = r["clean"], r["camera"]
    return (f"{r['excerpt']}: {r['size'][0]}x{r['size'][1]} fps {r['fps'] or 'changes'}: "
            f"video2midi {c['video2midi_onset_f1']:.3f} / {k['video2midi_onset_f1']:.3f}, "
            f"generated {_f(c.get('generated_onset_f1'))} / {_f(k.get('generated_onset_f1'))}")


def _mean(rows, *keys):
    vals = []
    for r in rows:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return float(np.mean(vals)) if vals else None


def _summary(rows: list[dict]) -> dict:
    vfr = [r for r in rows if r["fps"] is None]
    cfr = [r for r in rows if r["fps"] is not None]
    out = {"video2midi_clean": _mean(rows, "clean", "video2midi_onset_f1"),
           "video2midi_camera_vfr": _mean(vfr, "camera", "video2midi_onset_f1"),
           "video2midi_camera_cfr": _mean(cfr, "camera", "video2midi_onset_f1"),
           "generated_clean": _mean(rows, "clean", "generated_onset_f1"),
           "generated_camera": _mean(rows, "camera", "generated_onset_f1"),
           "reference_camera": _mean(rows, "camera", "reference_onset_f1"),
           "truth": _mean(rows, "truth_onset_f1"),
           "read_over_generate_camera": _mean(rows, "camera", "read_over_generate"),
           "read_ms_per_frame_camera": 1e3 * (_mean(rows, "camera", "read_s_per_frame") or 0),
           "decode_ms_per_frame_camera": 1e3 * (_mean(rows, "camera", "decode_s_per_frame")
                                                or 0),
           "read_keys_ms_per_frame_camera": 1e3 * (_mean(rows, "camera",
                                                         "read_keys_s_per_frame") or 0),
           "same_as_read_keys": all(r[k]["same_as_read_keys"] for r in rows
                                    for k in ("clean", "camera"))}
    if out["generated_clean"] and out["generated_camera"] is not None:
        out["generated_camera_over_clean"] = out["generated_camera"] / out["generated_clean"]
    return out


def _markdown(rows: list[dict], s: dict, args) -> str:
    lines = [
        "# The key reader on camera-mode videos",
        "",
        f"{len(rows)} test excerpts of {args.seconds:g} s (`choose_excerpts(..., 'test', "
        f"{args.excerpts}, {args.seconds:g}, seed {args.seed})`), each filmed by a camera drawn "
        "from its own seed (frame size, place, tilt, perspective, shades, black-key width and "
        "height, blur, noise, gain, offset, gamma, lossy yuv420p H.264) at a frame per key "
        "change or at 25/30/60 fps, beside the clean video of the same excerpt. Onset F1 "
        "(mir_eval, 50 ms) against the notes the video shows; generated: the shipped model at "
        "its recommended temperature and sampling floor, seed 0, transcribed by basic-pitch; "
        "reference path: the "
        "decoded notes through the SoundFont; ground truth: the simulator's audio (the ceiling).",
        "",
        "Made by `python benchmarks/reader.py --data data/piano --excerpts "
        f"{args.excerpts} --seconds {args.seconds:g} --doc docs/reader.md`.",
        "",
        "| excerpt | frame | fps | video2midi clean | video2midi camera | generated clean | "
        "generated camera | reference camera | ground truth | read ms/frame | "
        "read / generate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, k = r["clean"], r["camera"]
        lines.append(
            f"| {r['excerpt']} | {r['size'][0]}x{r['size'][1]} | {r['fps'] or 'changes'} | "
            f"{_f(c['video2midi_onset_f1'])} | {_f(k['video2midi_onset_f1'])} | "
            f"{_f(c.get('generated_onset_f1'))} | {_f(k.get('generated_onset_f1'))} | "
            f"{_f(k.get('reference_onset_f1'))} | {_f(r.get('truth_onset_f1'))} | "
            f"{1e3 * k['read_s_per_frame']:.2f} | {k['read_over_generate']:.3f} |")
    lines += [
        f"| **mean** | | | {_f(s['video2midi_clean'])} | vfr {_f(s['video2midi_camera_vfr'])}, "
        f"cfr {_f(s['video2midi_camera_cfr'])} | {_f(s['generated_clean'])} | "
        f"{_f(s['generated_camera'])} | {_f(s['reference_camera'])} | {_f(s['truth'])} | "
        f"{s['read_ms_per_frame_camera']:.2f} | {_f(s['read_over_generate_camera'])} |",
        "",
        "read ms/frame: the key reader in one decoding pass (`reader.read_video_keys` after "
        "`is_simulator_picture`: decoding, the frames kept for calibration, calibration, the "
        "per-key values) per frame; decoding alone (`iter_frames`) takes "
        f"{s['decode_ms_per_frame_camera']:.2f} ms a frame on average. read / generate: that "
        "time over the generation time of the same excerpt (one thread). "
        f"`sim.video.read_keys` as it is (two decoding passes) took "
        f"{s['read_keys_ms_per_frame_camera']:.2f} ms a frame in the same run, and read "
        + ("the same key states on every video" if s["same_as_read_keys"] else
           "OTHER key states on some video") + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
