"""The simulator end to end: a MIDI file -> key changes + ground-truth audio (+ files on disk)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from deepsynth.atomic import atomic_group, atomic_write_text, file_sha256
from deepsynth.audio import write_wav
from deepsynth.config import SimConfig, to_dict
from deepsynth.sim.keystates import KeyChanges, key_changes
from deepsynth.sim.midi import Piece, read_midi
from deepsynth.sim.synth import Rendered, load_soundfont, n_samples_for, render_notes


@dataclass(frozen=True)
class Simulation:
    piece: Piece
    changes: KeyChanges
    audio: Rendered
    cfg: SimConfig
    soundfont: str

    @property
    def seconds(self) -> float:
        return self.changes.n_samples / self.cfg.audio.sample_rate

    def metadata(self) -> dict:
        return {
            "name": self.piece.name,
            "sample_rate": self.cfg.audio.sample_rate,
            "n_samples": self.changes.n_samples,
            "seconds": round(self.seconds, 4),
            "n_notes": len(self.piece.notes),
            "n_key_changes": len(self.changes),
            "pedal": self.piece.pedal,
            "soundfont": self.soundfont,
            "gain_db": self.cfg.gain_db,
            "clip_scale": self.audio.scale,
            "clipped": self.audio.scale < 1.0,
            "peak_before_scaling": round(self.audio.peak, 5),
            "warnings": list(self.piece.warnings),
            "sim_config": to_dict(self.cfg),
        }


def read_piece(
    midi_path: str | os.PathLike, cfg: SimConfig = SimConfig(), any_instrument: bool = False
) -> tuple[Piece, KeyChanges]:
    """A MIDI file's notes and the key states its video shows (no audio rendered)."""
    piece = read_midi(midi_path, pedal=cfg.pedal, any_instrument=any_instrument)
    n = n_samples_for(piece.notes, cfg)
    return piece, key_changes(piece.notes, cfg.audio.sample_rate, n)


def simulate(
    midi_path: str | os.PathLike,
    cfg: SimConfig = SimConfig(),
    soundfont: str | os.PathLike | None = None,
    any_instrument: bool = False,
) -> Simulation:
    """Read a MIDI file and compute what the video shows and what the piano sounds like."""
    sf_path, _ = load_soundfont(soundfont)  # fail on a bad SoundFont before any work
    piece, changes = read_piece(midi_path, cfg, any_instrument)
    audio = render_notes(piece.notes, cfg, sf_path, n_samples=changes.n_samples)
    return Simulation(piece, changes, audio, cfg, str(sf_path))


def simulate_to_files(
    midi_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    cfg: SimConfig = SimConfig(),
    soundfont: str | os.PathLike | None = None,
    fps: float | None = None,
    any_instrument: bool = False,
    camera: int | None = None,
    lossless: bool = False,
) -> dict:
    """Write OUT/NAME.mp4 (video + audio), OUT/NAME.wav (ground truth) and OUT/NAME.json.
    `camera`: the seed of a camera-mode video (deepsynth.sim.camera) instead of the exact
    picture; its parameters go into the metadata. `lossless`: the exact gray stream instead of
    the players' format (deepsynth.sim.video)."""
    from deepsynth.sim.video import write_camera_video, write_video  # PyAV only needed here

    sim = simulate(midi_path, cfg, soundfont, any_instrument)
    out = Path(out_dir)
    name = name or Path(midi_path).stem
    meta = sim.metadata() | {"source": str(midi_path), "source_sha256": file_sha256(midi_path),
                             "fps": fps}
    targets = [out / f"{name}.{ext}" for ext in ("mp4", "wav", "json")]
    with atomic_group(targets) as (mp4, wav, js):  # all three, or none (nor a leftover)
        if camera is None:
            write_video(mp4, sim.changes, sim.audio.audio, fps=fps, lossless=lossless)
        else:
            from deepsynth.sim.camera import Camera, random_camera

            cam = Camera(random_camera(camera))
            meta["camera"] = cam.cfg.to_dict()
            write_camera_video(mp4, sim.changes, cam, sim.audio.audio, fps=fps)
        write_wav(wav, sim.audio.audio, cfg.audio.sample_rate)
        atomic_write_text(js, json.dumps(meta, indent=2) + "\n")
    return meta | {"outputs": [str(out / f"{name}.{ext}") for ext in ("mp4", "wav", "json")]}
