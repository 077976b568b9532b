"""The fault corpus's helpers: bad and unusual inputs made from scratch, running a command
in-process or as a process, and the check that nothing a user had was changed.

Every command run here is checked the same way (`Outcome.assert_refused`): exit code 2, exactly
one line on stderr, no traceback, no new file or folder left behind, and every file that was
there before (inputs, earlier outputs) byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- MIDI files byte by byte (mido would refuse to write some of these) ------------------------


def vlq(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


END = b"\x00\xff\x2f\x00"


def track(events: bytes, end: bool = True) -> bytes:
    body = events + (END if end else b"")
    return b"MTrk" + struct.pack(">I", len(body)) + body


def smf(tracks: list[bytes], fmt: int = 1, division: int = 480, n_tracks: int | None = None,
        extra: bytes = b"") -> bytes:
    head = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks) if n_tracks is None else n_tracks,
                                 division)
    return head + extra + b"".join(tracks)


def note(pitch: int = 60, on: int = 0, length: int = 480, vel: int = 80, ch: int = 0) -> bytes:
    """A note at delta `on`, released `length` ticks later (note-on with velocity 0)."""
    return vlq(on) + bytes([0x90 | ch, pitch, vel]) + vlq(length) + bytes([0x90 | ch, pitch, 0])


def tempo(delta: int, us_per_beat: int) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + us_per_beat.to_bytes(3, "big")


SCALE = b"".join(note(60 + i, 0, 240) for i in range(8))

# legal (or tolerated) MIDI files that must simulate (a correct result) or end in one line
UNUSUAL_MIDI: dict[str, bytes] = {
    "format0": smf([track(SCALE)], fmt=0),
    "format2": smf([track(SCALE), track(note(72, 0, 960))], fmt=2),
    "tempo_only_on_track_2": smf([track(b""), track(tempo(0, 250000) + SCALE)]),
    "tempo_change_mid_note": smf([track(tempo(0, 500000) + tempo(100, 1_000_000)
                                        + tempo(1, 300_000)), track(SCALE)]),
    "tempo_extremes": smf([track(tempo(0, 1) + tempo(480, 0xFFFFFF)), track(SCALE)]),
    "tempo_zero": smf([track(tempo(0, 0)), track(SCALE)]),
    "many_tempi": smf([track(b"".join(tempo(7, 300_000 + 1000 * i) for i in range(500))),
                       track(SCALE)]),
    "zero_length_notes": smf([track(note(60, 0, 0) + note(62, 0, 0) + note(64, 10, 200))]),
    "running_status": smf([track(b"\x00\x90\x3c\x50" + b"\x60\x3c\x00" + b"\x00\x3e\x50"
                                 + b"\x60\x3e\x00")]),
    "huge_delta": smf([track(note(60, 0, 480) + note(64, 0x0FFFFFFF, 480))]),
    "hour_of_silence": smf([track(note(60, 0, 480) + note(64, 960 * 3600, 480))], division=480),
    "no_end_of_track": smf([track(SCALE, end=False)]),
    "note_never_released": smf([track(b"\x00\x90\x3c\x50" + vlq(960) + b"\x90\x40\x50"
                                      + vlq(480) + b"\x80\x40\x00")]),
    "note_off_without_on": smf([track(b"\x00\x80\x30\x00" + SCALE)]),
    "empty_track_and_notes": smf([track(b"", end=False), track(SCALE)]),
    "extra_unknown_chunk": smf([track(SCALE)], extra=b"XFIH" + struct.pack(">I", 4) + b"abcd"),
    "smpte_division": smf([track(SCALE)], division=0xE728),
    "pitches_out_of_range": smf([track(note(5, 0, 240) + note(120, 0, 240) + SCALE)]),
    "sysex_and_meta": smf([track(b"\x00\xf0\x05\x7e\x7f\x09\x01\xf7" + b"\x00\xff\x01\x03abc"
                                 + b"\x00\xff\x7f\x00" + SCALE)]),
    "same_key_overlap": smf([track(b"\x00\x90\x3c\x50\x60\x90\x3c\x50\x60\x80\x3c\x00"
                                   + b"\x60\x80\x3c\x00")]),
    "drums_and_piano": smf([track(note(36, 0, 240, ch=9) + SCALE)]),
    "program_change_after_notes": smf([track(SCALE + b"\x00\xc0\x28" + SCALE)]),
}

# MIDI files that cannot be simulated: each must end in one line, exit code 2
BAD_MIDI: dict[str, bytes] = {
    "empty": b"",
    "text": b"this is not a MIDI file\n",
    "header_only": smf([], n_tracks=0),
    "zero_tracks_declared_one": smf([], n_tracks=1),
    "no_notes": smf([track(tempo(0, 500000))]),
    "only_zero_length": smf([track(note(60, 0, 0))]),
    "drums_only": smf([track(note(36, 0, 240, ch=9))]),
    "truncated": smf([track(SCALE)])[:40],
    "bad_track_length": smf([track(SCALE)])[:14] + b"MTrk\xff\xff\xff\xff" + SCALE,
    "zero_division": smf([track(SCALE)], division=0),
    "random_bytes": bytes(range(256)) * 4,
    "header_garbage": b"MThd" + b"\xff" * 40,
}


# --- running a command ------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots`: path -> SHA-256 of its bytes ('dir' for folders)."""
    files: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            files[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                files[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    files[p] = hashlib.sha256(fh.read()).hexdigest()
    return files


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    before: dict[str, str]
    after: dict[str, str]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def assert_refused(self, *fragments: str) -> None:
        """Exit 2, one line on stderr (naming each fragment), no traceback, nothing changed."""
        assert self.code == 2, f"exit {self.code}: {self.err[-2000:]}"
        assert "Traceback" not in self.err, self.err[-3000:]
        assert len(self.lines) == 1, self.err[-2000:]
        for fragment in fragments:
            assert fragment.lower() in self.err.lower(), self.err
        self.assert_unchanged()

    def assert_unchanged(self) -> None:
        """Every file that was there is there, byte-identical; nothing new was left."""
        changed = [p for p, h in self.before.items() if self.after.get(p) != h]
        new = sorted(set(self.after) - set(self.before))
        assert not changed, f"changed or removed: {changed}"
        assert not new, f"left behind: {new}"

    def assert_kept(self) -> None:
        """Every file that was there is there, byte-identical (new files allowed)."""
        changed = [p for p, h in self.before.items() if self.after.get(p) != h]
        assert not changed, f"changed or removed: {changed}"


def run_cli(argv: list[str], watch: list[Path], capsys) -> Outcome:
    """deepsynth.cli.main(argv) in this process, with the files under `watch` hashed before
    and after (argparse's own exit is caught as its exit code)."""
    from deepsynth.cli import main

    capsys.readouterr()
    before = snapshot(*watch)
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, before, snapshot(*watch))


def deepsynth_process(argv: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "deepsynth", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_process(argv: list[str], cwd: Path, watch: list[Path], timeout: float = 300) -> Outcome:
    before = snapshot(*watch)
    proc = deepsynth_process(argv, cwd)
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out, err, before, snapshot(*watch))


def kill_when(proc: subprocess.Popen, ready, sig: int, delay: float, timeout: float = 300):
    """Send `sig` to `proc` `delay` seconds after `ready()` first holds; (code, out, err)."""
    began = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ended (exit {proc.returncode}) before it could be signalled: {err}")
        if time.monotonic() - began > timeout:
            proc.kill()
            pytest.fail("never became ready to be signalled")
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def parts_under(root: Path) -> list[Path]:
    """Our temporary files under `root`."""
    return [p for p in Path(root).rglob(".*") if ".part" in p.name]


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
