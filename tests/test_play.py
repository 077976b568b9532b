"""deepsynth play (issue 20): live generation equals offline generation sample for sample,
whatever the block size; the latency accounting; key states from MIDI messages; the streaming
resampler; the CLI end to end with a MIDI file (--null, -o, --report), its one-line errors.
No sound card or MIDI port is needed (the clock is simulated, the inputs scripted)."""

import json
import sys
import wave

import numpy as np
import pytest
import torch
from midi_factory import TPB, make_midi, random_midi, save

import deepsynth
from deepsynth.api import array_source, open_input
from deepsynth.audio import read_wav
from deepsynth.cli import main
from deepsynth.generate import live
from deepsynth.generate.generator import Conditioner, Window, frame_features, generate
from deepsynth.generate.live import (
    ChangesInput,
    KeyTracker,
    LiveGenerator,
    MessageInput,
    Session,
    SimulatedClock,
)
from deepsynth.sim import keyboard

SR = 4000


@pytest.fixture(scope="module")
def synth():
    return deepsynth.load()  # the shipped model: the one the targets are about


@pytest.fixture(scope="module")
def piece():
    """1.5 s of key changes with presses, releases and chords (a piece known in advance)."""
    rng = np.random.default_rng(4)
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, 6000), 24, replace=False))]
    states = rng.random((len(starts), 88)) < 0.05
    states[0] = False
    states[5, 40] = True  # a key down from the first change's sample (a press at a boundary)
    return starts.astype(np.int64), states, 6000


class Collect:
    def __init__(self):
        self.blocks = []

    def write(self, pcm):
        self.blocks.append(pcm.copy())

    @property
    def audio(self):
        return np.concatenate(self.blocks)


def offline(synth, piece, seed, temperature=0.8):
    starts, states, n = piece
    src = array_source(states, starts, SR, keyboard.layout(), n)
    return generate(synth.model, [src], [Window(0, n)], temperature, seed,
                    floor=synth.floor)[0]


def play(synth, piece, seed, block, background=False, temperature=0.8, **kw):
    starts, states, n = piece
    out = Collect()
    kw.setdefault("floor", synth.floor)  # the shipped model's recommended sampling floor
    with LiveGenerator(synth.model, temperature, seed, block=block,
                       background=background, **kw) as gen:
        report = Session(gen, ChangesInput(starts, states, n), [out], SimulatedClock()).run()
    return out.audio, report


def test_chunked_conditioning_is_bit_identical_whatever_the_chunks(synth, piece):
    """What makes live audio equal to offline audio: the conditioning of a sample does not
    depend on the chunk it is computed in (bit for bit, not just close)."""
    starts, states, n = piece
    src = array_source(states, starts, SR, keyboard.layout(), n)
    cond = Conditioner(synth.model, [frame_features(synth.model, src)])
    whole = cond.chunk([src], [0], n)[0]
    for step, upto in ((1000, n), (37, n), (3, 600)):
        parts = [cond.chunk([src], [t], min(step, upto - t))[0] for t in range(0, upto, step)]
        assert np.array_equal(np.concatenate(parts), whole[:upto])
    for start, k in ((5000, 1), (1234, 5), (2999, 7)):  # below MIN_CONDITION samples too
        assert np.array_equal(cond.chunk([src], [start], k)[0], whole[start : start + k])


@pytest.mark.parametrize("block,background", [(1, False), (4, False), (4, True), (37, True),
                                              (500, False)])
def test_live_audio_equals_offline_audio_whatever_the_block(synth, piece, block, background):
    want = offline(synth, piece, seed=3)
    got, report = play(synth, piece, seed=3, block=block, background=background)
    assert got.dtype == np.int16 and len(got) == len(want)
    assert np.array_equal(got, want)
    assert report["blocks"] == -(-len(want) // block)
    assert got.std() > 100  # real audio, not silence on both sides


def test_live_audio_depends_on_the_seed_and_the_keys(synth, piece):
    a, _ = play(synth, piece, seed=1, block=16, horizon=64)
    b, _ = play(synth, piece, seed=2, block=16, horizon=64)
    starts, states, n = piece
    c, _ = play(synth, (starts, ~states, n), seed=1, block=16, horizon=64)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, offline(synth, piece, seed=1))


def test_live_equals_synthesize_of_the_same_midi_file(synth, tmp_path):
    mid = save(random_midi(7, n_notes=30), tmp_path / "song.mid")
    want = synth.synthesize(mid, duration=1.2, seed=9, postfilter=1)  # play's raw output
    ch = open_input(mid, SR).changes
    got, _ = play(synth, (ch.starts, ch.states, len(want)), seed=9, block=8, background=True,
                  temperature=synth.temperature)
    assert np.array_equal(got, want)


def test_latency_accounting_on_a_simulated_clock(synth, piece):
    """On a clock that waits for nothing else, a change's latency is block + lookahead: the
    block holding it can be made once the keys up to its end + lookahead are known."""
    _, report = play(synth, piece, seed=0, block=8)
    L = synth.model.lookahead
    lat = report["latency_ms"]
    assert report["changes"] == len(piece[0]) - 1  # the first shows the empty keyboard
    assert lat["count"] == report["changes"]
    assert lat["p50"] == lat["p99"] == lat["max"] == pytest.approx((8 + L) / SR * 1000)
    assert report["underruns"] == 0 and report["output_delay_ms"] == 10.0
    for key in ("compute_ms", "headroom"):
        d = report[key]
        assert set(d) == {"count", "mean", "p50", "p90", "p99", "max"}
        assert d["count"] == report["blocks"] and 0 < d["p50"] <= d["p99"] <= d["max"]
    assert report["block_ms"] == 2.0
    # an output stream that runs closer behind the keys than block + lookahead underruns
    starts, states, n = piece
    with LiveGenerator(synth.model, 0.8, 0, block=64) as gen:
        late = Session(gen, ChangesInput(starts, states, n), [], SimulatedClock(),
                       max_latency_ms=5).run()
    assert late["underruns"] == late["blocks"] and late["late_blocks_first"][:2] == [0, 64]


def test_real_clock_waits_until_the_deadline_or_the_wake_event():
    """Polling (spin=None), sleeping then polling, and sleeping alone all reach the deadline and
    not far past it; an input's wake event ends the wait at once."""
    import threading
    import time

    for spin in (None, 0.002, 0.0):
        clock = live.RealClock(spin)
        clock.start()
        clock.wait(0.03)
        assert 0.03 <= clock.now() < 0.5
        wake = threading.Event()
        threading.Timer(0.02, wake.set).start()
        clock.wait(clock.now() + 5.0, wake)  # a message arrives after 20 ms
        assert clock.now() < 2.0 and not wake.is_set()
        wake.set()  # one that came before the wait: no wait
        began = time.perf_counter()
        clock.wait(clock.now() + 5.0, wake)
        assert time.perf_counter() - began < 1.0 and not wake.is_set()
    with pytest.raises(ValueError, match="spin"):
        live.RealClock(-0.001)


def test_meter_counts_late_blocks_the_system_stalled():
    """A late block is 'stalled' when the decoder's thread was off the processor, since its first
    sample was due, for at least its lateness; other late blocks are not."""
    m = live.Meter(sample_rate=SR, block=4, delay=40)  # the output runs 10 ms behind
    m.block_done(0, 4, 0.0001, 0.005, off_cpu=0.0)  # on time (due at 10 ms)
    m.block_done(4, 4, 0.0001, 0.006, off_cpu=0.0)
    # due at 12 ms, ready at 16 ms: 4 ms late, after 6 ms off the core
    m.block_done(8, 4, 0.0001, 0.016, off_cpu=0.006)
    m.block_done(12, 4, 0.0001, 0.0165, off_cpu=0.006)  # due at 13 ms: the same stall
    m.block_done(96, 4, 0.0001, 0.030, off_cpu=0.006)  # on time
    # due at 35 ms, ready at 37: late with no time off the core since its first sample's time
    m.block_done(100, 4, 0.0001, 0.037, off_cpu=0.006)
    rep = m.report()
    assert rep["underruns"] == 3 and rep["late_blocks_first"] == [8, 12, 100]
    assert rep["underruns_stalled"] == 2 and rep["off_cpu_ms"] == 6.0
    assert "underruns_stalled" not in live.Meter(SR, 4, 40).report()  # not on the wall clock


def test_real_time_session_equals_offline_and_accounts_its_stalls(synth, piece):
    """On the wall clock (polling), a short piece: the same audio as offline, the stalls
    counted among the underruns."""
    starts, states, _ = piece
    n = 1200  # 0.3 s
    piece = (starts[starts < n], states[starts < n], n)
    out = Collect()
    with LiveGenerator(synth.model, 0.8, 3, block=4, floor=synth.floor) as gen:
        gen.warm_up()
        rep = Session(gen, ChangesInput(*piece), [out], live.RealClock()).run()
    assert np.array_equal(out.audio, offline(synth, piece, 3))
    assert 0 <= rep["underruns_stalled"] <= rep["underruns"] <= rep["blocks"] == n // 4
    assert rep["off_cpu_ms"] >= 0


def test_changes_that_come_too_late_are_refused(synth):
    with LiveGenerator(synth.model, 0.8, 0, block=16) as gen:
        gen.add_change(0, np.eye(88, dtype=bool)[30])  # at sample 0, before anything is made
        gen.next_block()
        assert gen.earliest_change() == 16 + gen.lookahead
        with pytest.raises(ValueError, match="too late"):
            gen.add_change(20, np.zeros(88, bool))
        gen.add_change(31, np.zeros(88, bool))


def test_key_tracker_reads_messages_as_the_simulator_reads_a_file(tmp_path):
    """Note on/off and the sustain pedal, fed at their samples, give the key changes the
    simulator computes from the same MIDI file (no re-strikes here)."""
    from deepsynth.config import AudioConfig, SimConfig
    from deepsynth.sim.simulate import read_piece

    notes = [(60, 90, 0, 240), (64, 80, 120, 600), (67, 70, 480, 700), (72, 60, 900, 1000)]
    mid = save(make_midi(notes, pedal=[(200, 127), (800, 0)]), tmp_path / "p.mid")
    _, want = read_piece(mid, SimConfig(audio=AudioConfig(sample_rate=SR)))
    tracker = KeyTracker()
    seconds = 0.5 / TPB  # 120 bpm
    events = []
    for pitch, vel, on, off in notes:
        events += [(on, (0x90, pitch, vel)), (off, (0x80, pitch, 0))]
    events += [(200, (0xB0, 64, 127)), (800, (0xB0, 64, 0))]
    for tick, msg in sorted(events, key=lambda e: e[0]):
        tracker.message(int(np.floor(tick * seconds * SR + 0.5)), msg)
    got = tracker.commit(10**9)
    samples = [s for s, _, _ in got]
    states = np.array([st for _, st, _ in got])
    assert want.states[0].any()  # a key down from sample 0
    assert samples == list(want.starts) and np.array_equal(states, want.states)


def test_key_tracker_restrike_drums_clipping_and_pending():
    t = KeyTracker()
    t.message(10, (0x90, 60, 100))
    t.message(10, (0x99, 62, 100))  # drums: ignored
    t.message(20, (0x90, 60, 100))  # struck again while down: released for one sample
    t.message(30, (0x90, 10, 100))  # below A0: the lowest key
    t.message(30, (0x80, 60, 0))
    assert [s for s, _, _ in t.commit(30)] == [10, 20, 21]  # 30 may still change
    (s, state, _), = t.commit(31)
    assert s == 30 and state[0] and not state[60 - 21] and state.sum() == 1
    t.message(40, (0xB0, 64, 127))  # the pedal changes nothing shown
    t.message(41, (0x80, 10, 0))  # released under the pedal: still shown
    assert t.commit(100) == []
    t.message(50, (0xB0, 64, 0))
    (s, state, _), = t.commit(100)
    assert s == 50 and not state.any()


def test_port_messages_drive_the_generator_exactly(synth):
    """The port's path (messages -> KeyTracker -> generator), scripted instead of a port: the
    audio equals offline generation of the key changes it produced."""

    class Scripted(MessageInput):
        def __init__(self, messages, n):
            super().__init__(duration=n)
            self.messages = list(messages)

        def poll(self, known):
            while self.messages and self.messages[0][0] < known:
                sample, msg = self.messages.pop(0)
                self.tracker.message(sample, msg, sample / SR)
            return super().poll(known)

        def next_time(self):
            times = [live.at_sample(self.messages[0][0] + 1, SR)] if self.messages else []
            pending = super().next_time()
            return min(times + ([pending] if pending is not None else []), default=None)

    messages = [(300, (0x90, 60, 90)), (900, (0x90, 64, 90)), (1200, (0xB0, 64, 127)),
                (1500, (0x80, 60, 0)), (2100, (0x90, 60, 90)), (2600, (0xB0, 64, 0)),
                (3000, (0x80, 64, 0)), (3300, (0x80, 60, 0))]
    source = Scripted(messages, 4000)
    out = Collect()
    recorded = []

    with LiveGenerator(synth.model, 0.8, 5, block=4, floor=synth.floor) as gen:
        add = gen.add_change

        def spy(sample, state):
            recorded.append((sample, state.copy()))
            return add(sample, state)

        gen.add_change = spy
        report = Session(gen, source, [out], SimulatedClock()).run()
    assert [s for s, _ in recorded] == [300, 900, 2100, 2101, 3000, 3300]
    starts = np.array([0] + [s for s, _ in recorded])
    states = np.array([np.zeros(88, bool)] + [st for _, st in recorded])
    assert np.array_equal(out.audio, offline(synth, (starts, states, 4000), seed=5))
    assert report["changes"] == 6


def test_streaming_resampler_equals_the_whole_signal():
    from scipy.signal import upfirdn

    from deepsynth.generate.devices import StreamingResampler

    rng = np.random.default_rng(0)
    x = rng.standard_normal(3001)
    for rate in (48000, 44100, 8000):
        r = StreamingResampler(SR, rate)
        cuts = np.sort(rng.choice(np.arange(1, len(x)), 40, replace=False))
        y = np.concatenate([r.process(p) for p in np.split(x, cuts)])
        want = upfirdn(r.h, x, r.up, r.down)[: len(y)]
        assert len(y) == -(-len(x) * r.up // r.down)
        np.testing.assert_allclose(y, want, atol=1e-9)
    t = np.arange(4000) / SR  # a 440 Hz tone stays one at 48 kHz
    y = StreamingResampler(SR, 48000).process(np.sin(2 * np.pi * 440 * t))
    spectrum = np.abs(np.fft.rfft(y[4800:]))
    assert abs(np.argmax(spectrum) * 48000 / len(y[4800:]) - 440) < 2


# -- the command -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return save(random_midi(3, n_notes=24), tmp_path_factory.mktemp("play") / "song.mid")


def test_cli_play_a_midi_file_equals_synthesize(song, tmp_path, capsys):
    wav, rep, off = tmp_path / "live.wav", tmp_path / "report.json", tmp_path / "off.wav"
    rc = main(["play", "--midi-file", str(song), "--null", "-o", str(wav), "--clock",
               "simulated", "--duration", "1.5", "--seed", "4", "--block", "8",
               "--report", str(rep)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1.5 s played" in out and "underruns 0" in out
    assert main(["synthesize", str(song), "-o", str(off), "--duration", "1.5", "--seed", "4",
                 "--postfilter", "1", "-q"]) == 0
    a, ra = read_wav(wav)
    b, rb = read_wav(off)
    assert ra == rb == SR and len(a) == 6000 and np.array_equal(a, b)
    report = json.loads(rep.read_text())
    for key in ("latency_ms", "compute_ms", "headroom"):
        assert {"p50", "p99", "max"} <= set(report[key])
    assert report["underruns"] == 0 and report["block_samples"] == 8
    assert report["lookahead_samples"] == 15 and report["generated_seconds"] == 1.5
    assert report["latency_ms"]["max"] == pytest.approx((8 + 15) / SR * 1000)
    assert not list(tmp_path.glob(".*part*"))  # no temporary left


def test_cli_play_keeps_a_valid_wav_when_stopped(song, tmp_path, monkeypatch, capsys):
    """Ctrl-C (or SIGTERM) is how a live session ends: the wav so far is kept, valid."""
    done = []
    original = live.Meter.block_done

    def stop_after_some(self, *a, **k):
        original(self, *a, **k)
        done.append(1)
        if len(done) == 50:
            raise KeyboardInterrupt

    monkeypatch.setattr(live.Meter, "block_done", stop_after_some)
    wav = tmp_path / "cut.wav"
    rc = main(["play", "--midi-file", str(song), "--null", "-o", str(wav), "--clock",
               "simulated", "--block", "10", "-q", "--report", str(tmp_path / "r.json")])
    assert rc == 0
    with wave.open(str(wav)) as w:
        assert w.getnframes() == 500 and w.getframerate() == SR
    assert "stopped after 0.1 s" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] is True


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_cli_play_one_line_errors(song, tmp_path, capsys, monkeypatch):
    one_line_error(capsys, ["play", "--midi-file", str(tmp_path / "nope.mid"), "--null"],
                   "no such file")
    one_line_error(capsys, ["play", "--midi-file", str(tmp_path / "x.mp4"), "--null"],
                   "MIDI file")
    one_line_error(capsys, ["play", "--midi-file", str(song), "--clock", "simulated"],
                   "--null")
    one_line_error(capsys, ["play", "--midi-file", str(song), "--null", "--block", "0"],
                   "--block")
    one_line_error(capsys, ["play", "--midi-file", str(song), "--null", "--spin", "-1"],
                   "--spin")
    one_line_error(capsys, ["play", "--midi-file", str(song), "--null", "--clock", "cpu",
                            "--spin", "1"], "--spin")
    one_line_error(capsys, ["play", "--midi-file", str(song), "--null", "-o",
                            str(tmp_path / "x.mp3")], ".wav")
    monkeypatch.setitem(sys.modules, "rtmidi", None)  # the live extra is not installed
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    one_line_error(capsys, ["play", "--list-ports"], "deepsynth[live]")
    one_line_error(capsys, ["play", "--null"], "deepsynth[live]")
    one_line_error(capsys, ["play", "--list-devices"], "deepsynth[live]")
    one_line_error(capsys, ["play", "--midi-file", str(song)], "deepsynth[live]")


def test_cli_play_missing_port_and_device(song, capsys, monkeypatch):
    """With the extra installed but no keyboard or card: one line naming what is missing."""
    import types

    class FakeIn:
        def __init__(self, ports):
            self.ports = ports

        def get_ports(self):
            return self.ports

        def delete(self):
            pass

    fake = types.SimpleNamespace(MidiIn=lambda: FakeIn([]), RtMidiError=OSError)
    monkeypatch.setitem(sys.modules, "rtmidi", fake)
    one_line_error(capsys, ["play", "--null"], "no MIDI input port")
    fake.MidiIn = lambda: FakeIn(["Piano A", "Synth B"])
    one_line_error(capsys, ["play", "--null", "--port", "organ"], "no MIDI input port 'organ'")
    assert main(["play", "--list-ports"]) == 0
    assert capsys.readouterr().out.splitlines() == ["0: Piano A", "1: Synth B"]

    class PortAudioError(Exception):
        pass

    def query(device=None, kind=None):
        if device is None and kind is None:
            return [{"name": "Speakers", "max_output_channels": 2, "default_samplerate": 48000}]
        raise ValueError(f"No output device matching {device!r}")

    sd = types.SimpleNamespace(query_devices=query, PortAudioError=PortAudioError,
                               default=types.SimpleNamespace(device=[-1, 0]))
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    assert main(["play", "--list-devices"]) == 0
    assert "0: Speakers, 2 channels, 48000 Hz (default)" in capsys.readouterr().out
    one_line_error(capsys, ["play", "--midi-file", str(song), "--device", "hdmi"],
                   "no sound card output 'hdmi'")


def test_torch_threads_restored(synth):
    threads = torch.get_num_threads()
    with LiveGenerator(synth.model, 0.8, 0, block=4):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_sigterm_ends_a_real_time_session_with_a_valid_wav(song, tmp_path):
    """In real time, in a process of its own: SIGTERM keeps what was played, a valid wav."""
    import signal
    import subprocess
    import time

    wav = tmp_path / "live.wav"
    proc = subprocess.Popen([sys.executable, "-m", "deepsynth", "play", "--midi-file", str(song),
                             "--null", "-o", str(wav), "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.glob(".live.wav*")):
        time.sleep(0.2)  # the temporary appears when the session starts
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 143), err
    with wave.open(str(wav)) as w:
        assert w.getnframes() > SR and w.getframerate() == SR
    assert not list(tmp_path.glob(".live.wav*"))


def test_api_stream_equals_synthesize(synth, piece):
    """Synth.stream(): the live generator from Python, block by block by hand."""
    starts, states, n = piece
    want = synth.synthesize((states[1:], starts[1:] / SR), duration=n / SR, seed=6,
                            postfilter=1)
    changes = list(zip(starts[1:], states[1:], strict=True))
    blocks = []
    with synth.stream(seed=6, block=50) as gen:
        while gen.t < n:
            while changes and changes[0][0] < gen.needed():
                gen.add_change(*changes.pop(0))
            blocks.append(gen.next_block(min(gen.block, n - gen.t)))
    assert np.array_equal(np.concatenate(blocks), want)
