"""Live generation: key states come in while the model plays, audio goes out block by block.

`LiveGenerator` is the streaming form of `generator.generate` for one input: the same
conditioning (`Conditioner.reads` / `Conditioner.condition`, the keyboard's frames drawn from the
key states as a MIDI source draws them), the same decoder state (`decoder_state`) and the same
random stream (`input_rng`), so for the same key states and seed its audio equals `generate`'s
sample for sample, whatever the block size (tests/test_play.py).

A block of samples [t, t + block) can be generated once the key states up to
t + block + lookahead are known (the conditioning looks `lookahead` samples ahead). The
conditioning of the samples after the last known change is computed ahead, on the assumption that
nothing changes (what a held keyboard does); a change at sample s cuts that speculation back to
s - lookahead, the first sample whose conditioning reads it, and it is computed again: in a
background thread (`background=True`), so the decoder never waits for a long conditioning call
unless a change forces one. The numbers do not depend on when or in which thread they are
computed, only the timing does.

`Session` runs a generator against a clock: key states from a `KeyInput` (a MIDI file played in
real time, or a MIDI port through `KeyTracker`), blocks out to sinks, and the latency accounting
(`Meter`): per key change, the time from its arrival to the moment the sample at that change is
ready to be played; per block, the compute time and whether it was ready before the output
stream needed it (an underrun otherwise, against an output delay of `max_latency`).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from deepsynth.generate.core import check_floor, input_rng
from deepsynth.generate.defaults import (  # noqa: F401  (re-exported)
    DEFAULT_BLOCK,
    DEFAULT_HORIZON,
    DEFAULT_MAX_LATENCY_MS,
)
from deepsynth.generate.generator import Conditioner, decoder_state, inference_model
from deepsynth.layout import N_KEYS, KeyboardLayout
from deepsynth.model.deepsynth import DeepSynth

SWITCH_INTERVAL = 2e-4  # seconds: Python's GIL switch interval while a session runs
WORKER_NICE = 10  # the conditioning thread's nice, above the decoder's
URGENT_SAMPLES = 32  # conditioning computed when the decoder waits for it (a call costs mostly
#                      its fixed overhead, so the rest of the horizon follows in the next call)


@dataclass
class _Segment:
    start: int
    cond: np.ndarray  # (n, C) float32


class LiveGenerator:
    """int16 audio block by block for key states given as they happen (one input).

    `add_change(sample, state)`: from `sample` on the keyboard shows `state` ((88,) bool), in
    time order; before the first change the keyboard is empty. `next_block()` generates
    the next `block` samples; it needs every change before `needed()` to have been given (the
    caller's clock says so), and a change may not come earlier than `earliest_change()`.
    `layout` draws the key states as frames (default: the simulator's keyboard, as a MIDI source
    draws them). `model` is left as it was."""

    def __init__(
        self,
        model: DeepSynth,
        temperature: float = 1.0,
        seed: int = 0,
        block: int = DEFAULT_BLOCK,
        horizon: int = DEFAULT_HORIZON,
        background: bool = False,
        layout: KeyboardLayout | None = None,
        floor: float = 0.0,
    ) -> None:
        if block < 1 or horizon < 1:
            raise ValueError(f"need block >= 1 and horizon >= 1, got {block}, {horizon}")
        self.model = model = inference_model(model)
        self.temperature = float(temperature)
        self.floor = check_floor(floor)
        self.block = int(block)
        self.horizon = max(int(horizon), self.block)  # at least a block per call
        self.lookahead = model.lookahead
        self.sample_rate = model.cfg.audio.sample_rate
        if layout is None:
            from deepsynth.sim import keyboard

            layout = keyboard.layout()
        self.layout = layout
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as generate's conditioning (restored by close)
        self._cond = Conditioner(model, [])
        self._state = decoder_state(model, 1, block)
        self._rng = input_rng(int(seed))
        # classes -> int16 audio, block after block (the de-emphasis state carried): the same
        # numbers as offline
        self._pcm = model.output.pcm_stream()
        self.t = 0  # the next sample to generate
        # the timeline: sample where each change starts and the state it shows (appended only)
        self._starts = np.zeros(64, np.int64)
        self._states: list[np.ndarray] = [np.zeros(N_KEYS, bool)]  # sample 0: the empty keyboard
        self._n = 1
        self._version = 0  # changes given so far
        self._cuts: list[tuple[int, int]] = []  # (version, first sample it invalidates)
        # each distinct state's row of features (row 0: the empty keyboard), grown as needed
        self._row_of_state: dict[bytes, int] = {}
        self._row_of_change = np.zeros(64, np.int64)  # the feature row of each change
        self._n_rowed = 0  # changes whose row is known
        self._rows: list[torch.Tensor] | None = None
        self._n_rows = 0
        if self._cond.conditioned:
            self._rows = [torch.empty((256, e.shape[1]), dtype=e.dtype) for e in self._cond.empty]
        self._segments: deque[_Segment] = deque()
        self._taken = 0  # conditioning handed to the decoder: samples before it
        self._cut = False  # a change cut the conditioning back since the last call
        self._lock = threading.Condition()
        self._busy = False  # a conditioning call is running (in the background thread)
        self._stop = False
        self.cond_calls = 0
        self.cond_seconds = 0.0
        self._thread = None
        if background and self._cond.conditioned:
            self._thread = threading.Thread(target=self._work, name="deepsynth-conditioning",
                                            daemon=True)
            self._thread.start()

    @property
    def background(self) -> bool:
        """Whether the conditioning runs in a thread of its own."""
        return self._thread is not None

    # -- the timeline ----------------------------------------------------------------------

    def earliest_change(self) -> int:
        """The first sample a new change may start at: the conditioning of what was generated
        must not read it (a change at sample s is read from sample s - lookahead on), and the
        changes come in time order (one at the sample of the one before replaces it)."""
        generated = self.t + self.lookahead if self.t else 0
        return max(generated, int(self._starts[self._n - 1]))

    def needed(self) -> int:
        """Changes before this sample must all be known before `next_block`."""
        return self.t + self.block + self.lookahead

    def add_change(self, sample: int, state: np.ndarray) -> bool:
        """From `sample` on the keyboard shows `state` ((88,) bool, A0 first); False if that
        is what it showed already (nothing changes)."""
        state = np.asarray(state, dtype=bool).reshape(N_KEYS).copy()
        sample = int(sample)
        with self._lock:
            if sample < self.earliest_change():
                raise ValueError(f"a change at sample {sample} comes too late: samples before "
                                 f"{self.earliest_change()} are final")
            if np.array_equal(state, self._states[self._n - 1]):
                return False
            if self._n == len(self._starts):
                self._starts = np.concatenate([self._starts, np.zeros_like(self._starts)])
            self._starts[self._n] = sample
            self._states.append(state)
            self._n += 1
            self._version += 1
            cut = sample - self.lookahead  # the first sample whose conditioning reads it
            self._cuts.append((self._version, cut))
            self._truncate(cut)
            self._cut = True
            self._lock.notify_all()
        return True

    def _truncate(self, cut: int) -> None:
        cut = max(cut, self._taken)
        while self._segments and self._segments[-1].start >= cut:
            self._segments.pop()
        if self._segments and self._segments[-1].start + len(self._segments[-1].cond) > cut:
            last = self._segments[-1]
            last.cond = last.cond[: cut - last.start]

    def _valid_end(self) -> int:
        """The end of the conditioning computed so far (what was handed out included)."""
        if not self._segments:
            return self._taken
        last = self._segments[-1]
        return last.start + len(last.cond)

    # -- the conditioning ------------------------------------------------------------------

    def _row(self, state: np.ndarray) -> int:
        """The feature row of a state (computed once per distinct state, by the one thread that
        computes conditioning)."""
        key = np.packbits(state).tobytes()
        row = self._row_of_state.get(key)
        if row is not None:
            return row
        frame = None if self._n_rows == 0 and not state.any() else self.layout.render(state[None])
        if frame is None:
            feats = self._cond.empty  # the Conditioner's own row of the empty keyboard
        elif self._cond.packed is not None:  # key levels alone: the same numbers without torch
            feats = [torch.from_numpy(self.model.layout.key_levels(frame))]
        else:
            with torch.no_grad():
                feats = self.model.frame_features(torch.from_numpy(frame))
        if self._n_rows == len(self._rows[0]):
            self._rows = [torch.cat([r, torch.empty_like(r)]) for r in self._rows]
        for rows, f in zip(self._rows, feats, strict=True):
            rows[self._n_rows] = f[0]
        self._row_of_state[key] = row = self._n_rows
        self._n_rows += 1
        return row

    def _compute(self, start: int, n: int, n_changes: int) -> np.ndarray:
        """(n, C): the conditioning of [start, start + n) with the first `n_changes` changes
        of the timeline (the last one held from then on), as `Conditioner.chunk` computes it."""
        began = time.perf_counter()
        if self._n_rows == 0:
            self._row(self._states[0])
        while self._n_rowed < n_changes:
            if self._n_rowed == len(self._row_of_change):
                self._row_of_change = np.concatenate([self._row_of_change,
                                                      np.zeros_like(self._row_of_change)])
            self._row_of_change[self._n_rowed] = self._row(self._states[self._n_rowed])
            self._n_rowed += 1
        lo, hi = self._cond.reads(start, n)
        starts = self._starts[:n_changes]
        change = np.searchsorted(starts, np.clip(np.arange(lo, hi), 0, None), side="right") - 1
        rows = self._row_of_change[change]
        if lo < 0:
            rows[:-lo] = 0  # before the piece: the empty keyboard (row 0)
        if self._cond.packed is not None:  # the compiled loop reads the rows it needs
            cond = self._cond.condition([self._rows[0][: self._n_rows]], rows, n)
        else:
            used, local = np.unique(rows, return_inverse=True)  # only the frames it reads
            index = torch.from_numpy(used)
            feats = [r[: self._n_rows][index] for r in self._rows]
            cond = self._cond.condition(feats, local.astype(np.int64), n)
        self.cond_calls += 1
        self.cond_seconds += time.perf_counter() - began
        return cond

    def _job(self) -> tuple[int, int, int, int]:
        """(start, n, version, changes) of the next conditioning call (under the lock): short
        when a change was just cut in and the decoder is about to need it, else `horizon`."""
        start = self._valid_end()
        urgent = self._cut and start < self.t + 2 * self.block + self.lookahead
        self._cut = False
        n = min(self.horizon, URGENT_SAMPLES) if urgent else self.horizon
        return start, n, self._version, self._n

    def _store(self, start: int, cond: np.ndarray, version: int) -> None:
        """Keep what is still valid of a conditioning call made at `version` (under the lock)."""
        end = start + len(cond)
        for v, cut in reversed(self._cuts):
            if v <= version:
                break
            end = min(end, cut)
        if start != self._valid_end() or end <= start:
            return  # cut back before it while it ran
        self._segments.append(_Segment(start, cond[: end - start]))

    def _fill(self, upto: int) -> None:
        """Compute conditioning (here, in this thread) until it covers samples before `upto`."""
        while self._valid_end() < upto:
            start, n, version, changes = self._job()
            self._store(start, self._compute(start, n, changes), version)

    def _work(self) -> None:
        """The background thread: keep `horizon` samples of conditioning ahead of the decoder.
        It runs at a lower priority than the decoder's thread (Linux: a thread's own nice)."""
        with contextlib.suppress(AttributeError, OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                      + WORKER_NICE))
        while True:
            with self._lock:
                while not self._stop and self._valid_end() >= self.t + self.horizon:
                    self._lock.wait()
                if self._stop:
                    return
                start, n, version, changes = self._job()
                self._busy = True
            try:
                cond = self._compute(start, n, changes)
            finally:
                with self._lock:
                    self._busy = False
                    self._store(start, cond, version)
                    self._lock.notify_all()

    def prefetch(self) -> None:
        """Compute the conditioning the next blocks need now (no-op with a background thread,
        which does it on its own): call it while waiting, so a change is read before it is
        needed."""
        if self._thread is None and self._cond.conditioned:
            with self._lock:
                self._fill(self.t + self.block)

    def _take(self, n: int) -> np.ndarray | None:
        """The conditioning of [t, t + n), computed if need be (waiting for the thread)."""
        if not self._cond.conditioned:
            return None
        with self._lock:
            if self._thread is None:
                self._fill(self.t + n)
            else:
                while self._valid_end() < self.t + n:
                    self._lock.notify_all()
                    self._lock.wait()
            parts, need, t = [], n, self.t
            self._taken = t + n
            while need:
                seg = self._segments[0]
                lo = t - seg.start
                take = min(need, len(seg.cond) - lo)
                parts.append(seg.cond[lo : lo + take])
                need -= take
                t += take
                if lo + take == len(seg.cond):
                    self._segments.popleft()
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # -- the audio -------------------------------------------------------------------------

    def next_block(self, n: int | None = None) -> np.ndarray:
        """The next `n` (default `block`) samples, int16."""
        n = self.block if n is None else int(n)
        cond = self._take(n)
        uniforms = self._rng.random((n, self.model.output.n_uniforms))
        classes, _ = self._state.run(None if cond is None else cond[None], n, uniforms[None],
                                     self.temperature, floor=self.floor)
        with self._lock:
            self.t += n
            self._lock.notify_all()
        return self._pcm(classes[0])

    def warm_up(self) -> None:
        """Load the decoder's compiled kernel (a call on no samples) and the conditioning's, so
        the first block does not pay for them."""
        cond = None
        if self._cond.conditioned:
            cond = np.zeros((1, 0, self._cond.channels), np.float32)
            if self._cond.packed is not None:  # and the conditioning's compiled loop
                lo, hi = self._cond.reads(0, 1)
                self._cond.condition([self._cond.empty[0]], np.zeros(hi - lo, np.int64), 1)
        self._state.run(cond, 0, np.zeros((1, 0, self.model.output.n_uniforms)),
                        self.temperature)

    def close(self) -> None:
        """Stop the background thread (if any) and give torch its threads back."""
        if self._thread is not None:
            with self._lock:
                self._stop = True
                self._lock.notify_all()
            self._thread.join()
            self._thread = None
        if self._threads:
            torch.set_num_threads(self._threads)
            self._threads = 0

    def __enter__(self) -> LiveGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- key states from MIDI messages ---------------------------------------------------------


LOWEST_PITCH = 21  # A0, the keyboard's first key (deepsynth.layout)
SUSTAIN_CC = 64
DRUM_CHANNEL = 9


class KeyTracker:
    """MIDI messages as they arrive -> the key states a keyboard video would show, the way the
    simulator reads a MIDI file (deepsynth.sim.midi, pedal mode "extend"): a key released while
    the sustain pedal (CC64 >= 64) is down stays shown pressed until the pedal lifts; a key struck
    while shown pressed is shown released for one sample first (so every strike is a visible
    press: the simulator shows it released the sample before; live, that sample may be past, so
    the new press shows one sample after the message); drum-channel notes are ignored, pitches
    outside the 88 keys clipped to them. Messages are (status, data1, data2) bytes."""

    def __init__(self) -> None:
        self.down = np.zeros(N_KEYS, bool)  # physically held
        self.held = np.zeros(N_KEYS, bool)  # released under the pedal, still shown
        self.pedal = False
        self.pending: dict[int, tuple[np.ndarray, float]] = {}  # sample -> (state, arrival)
        self._restruck: list[int] = []  # keys struck again at sample `_restruck_at`
        self._restruck_at = -1
        self._committed = np.zeros(N_KEYS, bool)

    @property
    def shown(self) -> np.ndarray:
        return self.down | self.held

    def _show(self, sample: int) -> None:
        first = self.pending.get(sample)
        arrival = self._arrival if first is None else first[1]
        state = self.shown.copy()
        if self._restruck:  # released at this sample, pressed from the next one
            self.pending[sample + 1] = (state, arrival)
            state = state.copy()
            state[self._restruck] = False
        self.pending[sample] = (state, arrival)

    def message(self, sample: int, msg: Sequence[int], arrival: float | None = None) -> None:
        """Apply one message received at `sample`; `arrival` (seconds, default the sample
        itself) is only handed back with the changes it makes."""
        self._arrival = sample if arrival is None else arrival
        if sample != self._restruck_at:
            self._restruck, self._restruck_at = [], sample
        if not msg:
            return
        status = msg[0] & 0xF0
        channel = msg[0] & 0x0F
        if status in (0x80, 0x90) and len(msg) >= 3:
            if channel == DRUM_CHANNEL:
                return
            key = int(np.clip(msg[1] - LOWEST_PITCH, 0, N_KEYS - 1))
            if status == 0x90 and msg[2] > 0:
                if self.shown[key] or key in self._restruck:  # a re-strike
                    self._restruck.append(key)
                self.held[key] = False
                self.down[key] = True
            else:
                if not self.down[key]:
                    return
                self.down[key] = False
                self.held[key] = self.pedal
            self._show(sample)
        elif status == 0xB0 and len(msg) >= 3 and msg[1] == SUSTAIN_CC and channel != DRUM_CHANNEL:
            pedal = msg[2] >= 64
            if pedal == self.pedal:
                return
            self.pedal = pedal
            if not pedal and self.held.any():
                self.held[:] = False
                self._show(sample)

    def commit(self, before: int) -> list[tuple[int, np.ndarray, float]]:
        """(sample, state, arrival of its first message) of the changes at samples before
        `before` (no message can change them any more), in time order; later ones stay
        pending."""
        out = []
        for s in sorted(s for s in self.pending if s < before):
            state, arrival = self.pending.pop(s)
            if not np.array_equal(state, self._committed):  # (a pedal press changes nothing)
                out.append((s, state, arrival))
                self._committed = state
        return out


# -- clocks, inputs, sinks -------------------------------------------------------------------


def at_sample(sample: int, sample_rate: int) -> float:
    """The first time (seconds) at which floor(time * sample_rate) >= sample."""
    return float(sample) / sample_rate + 1e-9


class Clock(Protocol):
    """Seconds since the session started; `wait` returns at `until` or earlier when woken."""

    def start(self) -> None: ...

    def now(self) -> float: ...

    def wait(self, until: float, wake: threading.Event | None = None) -> None: ...


class RealClock:
    """The wall clock (time.perf_counter). A wait sleeps until `spin` seconds before its end,
    then polls the clock (and the input's wake event) until the end: `spin=None` polls the
    whole wait, `spin=0` sleeps it. Polling keeps the core busy; on a virtual machine a core
    that sleeps is handed to other guests and can come back milliseconds late (docs/play.md)."""

    def __init__(self, spin: float | None = None) -> None:
        if spin is not None and not spin >= 0:
            raise ValueError(f"spin must be >= 0 seconds or None, not {spin}")
        self.spin = spin

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def wait(self, until: float, wake: threading.Event | None = None) -> None:
        delay = until - self.now()
        if delay <= 0:
            return
        if self.spin is not None and delay > self.spin:
            if wake is not None:
                if wake.wait(delay - self.spin):
                    wake.clear()
                    return
            else:
                time.sleep(delay - self.spin)
        end, clock = self.t0 + until, time.perf_counter
        while clock() < end and not (wake is not None and wake.is_set()):
            pass
        if wake is not None:
            wake.clear()


class SimulatedClock:
    """A clock that jumps to wherever it is asked to wait for: a session on it runs as fast as
    it can compute, with the timing of a real one (for tests and for exactness checks)."""

    def start(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait(self, until: float, wake: threading.Event | None = None) -> None:
        self.t = max(self.t, until)


class CpuClock:
    """A dedicated core, emulated on a shared machine: time passes when this process computes
    (its CPU time, all threads) and when it waits (at once, as `SimulatedClock`), not while
    other processes run. A session on it is timed as if it had a core of its own, except on a
    virtual machine that counts its host's stalls as the process's CPU time (measured here:
    `benchmarks/play.py --only noise`)."""

    def start(self) -> None:
        self.waited = 0.0
        self.cpu0 = time.process_time()

    def now(self) -> float:
        return self.waited + time.process_time() - self.cpu0

    def wait(self, until: float, wake: threading.Event | None = None) -> None:
        self.waited += max(0.0, until - self.now())

    timer = staticmethod(time.process_time)  # compute times: CPU time too


@dataclass
class Change:
    """A key state change: shown from `sample` on, arrived at `arrival` seconds (session time)."""

    sample: int
    state: np.ndarray
    arrival: float


class KeyInput(Protocol):
    """Where the key states come from."""

    wake: threading.Event | None  # set when something arrives (None: `next_time` says when)

    def start(self, clock: Clock, sample_rate: int) -> None: ...

    def poll(self, known: int) -> list[Change]:
        """The changes at samples before `known`, not given before."""
        ...

    def next_time(self) -> float | None:
        """When the next change is due (seconds), if known in advance."""
        ...

    def end(self) -> int | None:
        """The sample the piece ends at, if it has an end."""
        ...

    def close(self) -> None: ...


class ChangesInput:
    """Key changes known in advance (a MIDI file's, as the simulator reads it), each given when
    the clock reaches it: a piece played in real time. `n_samples`: where the piece ends."""

    wake = None

    def __init__(self, starts: np.ndarray, states: np.ndarray, n_samples: int) -> None:
        self.starts = np.asarray(starts, np.int64)
        self.states = np.asarray(states, bool)
        self.n_samples = int(n_samples)
        self.i = 0

    def start(self, clock: Clock, sample_rate: int) -> None:
        self.sr = sample_rate
        self.i = 0

    def poll(self, known: int) -> list[Change]:
        out = []
        while self.i < len(self.starts) and self.starts[self.i] < known:
            s = int(self.starts[self.i])
            out.append(Change(s, self.states[self.i], s / self.sr))
            self.i += 1
        return out

    def next_time(self) -> float | None:
        return at_sample(self.starts[self.i] + 1, self.sr) if self.i < len(self.starts) else None

    def end(self) -> int | None:
        return self.n_samples

    def close(self) -> None:
        pass


class MessageInput:
    """MIDI messages pushed by another thread (a port's callback) through `KeyTracker`: each is
    dated at the sample of the clock when it arrives."""

    def __init__(self, duration: int | None = None) -> None:
        self.wake = threading.Event()
        self.tracker = KeyTracker()
        self._queue: deque[tuple[int, float, Sequence[int]]] = deque()
        self._lock = threading.Lock()
        self._clock: Clock | None = None
        self.duration = duration

    def start(self, clock: Clock, sample_rate: int) -> None:
        self._clock, self.sr = clock, sample_rate

    def push(self, msg: Sequence[int]) -> None:
        """A message arrived now (any thread)."""
        if self._clock is None:
            return
        with self._lock:
            now = self._clock.now()
            self._queue.append((int(math.floor(now * self.sr)), now, list(msg)))
        self.wake.set()

    def poll(self, known: int) -> list[Change]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        for sample, arrival, msg in items:
            self.tracker.message(sample, msg, arrival)
        return [Change(s, st, arrival) for s, st, arrival in self.tracker.commit(known)]

    def next_time(self) -> float | None:
        pending = self.tracker.pending
        return at_sample(min(pending) + 1, self.sr) if pending else None

    def end(self) -> int | None:
        return self.duration

    def close(self) -> None:
        pass


class Sink(Protocol):
    def write(self, pcm: np.ndarray) -> None: ...


# -- the accounting ------------------------------------------------------------------------


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """count, mean, p50, p90, p99, max of `values` (empty: the count alone)."""
    a = np.asarray(values, np.float64)
    if not len(a):
        return {"count": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": int(len(a)), "mean": round(float(a.mean()), 4), "p50": round(float(p50), 4),
            "p90": round(float(p90), 4), "p99": round(float(p99), 4),
            "max": round(float(a.max()), 4)}


@dataclass
class Meter:
    """Latency accounting of a session (times in seconds of session time).

    A change's latency: from its arrival to the moment the sample at the change (where the
    offline audio reacts to it) is ready to be played, if the output plays each block as soon as
    it is ready: the block's ready time plus the sample's place in it. A block is late (an
    underrun) when it is ready after the output stream, running `delay` samples behind the
    piece, needs its first sample. Compute: the time `next_block` took (its conditioning
    included).

    On the wall clock, polling, `block_done` is also given `off_cpu`: the decoder thread's time
    off the processor so far (wall time minus its CPU time). A late block is *stalled* when the
    thread was off the processor for at least as long as the block is late, between the ready
    time of the last block before the block's first sample (its time in the piece) and its own
    ready time: a thread that polls and has no conditioning thread to wait for never sleeps,
    so that is time the system (or a virtual machine's host) took the core away."""

    sample_rate: int
    block: int
    delay: int  # samples the output stream runs behind the piece (max_latency)
    latency: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # start sample of every late block
    stalled: int = 0  # late blocks explained by time off the processor (see above)
    _waiting: deque = field(default_factory=deque)  # (sample, arrival) of changes not yet played
    _ready: list[float] = field(default_factory=list)  # with off_cpu: each block's ready time
    _off: list[float] = field(default_factory=list)  # and the off-processor time by then

    def change(self, c: Change) -> None:
        self._waiting.append((c.sample, c.arrival))

    def block_done(self, start: int, n: int, compute: float, ready: float,
                   off_cpu: float | None = None) -> None:
        self.compute.append(compute)
        if off_cpu is not None:
            if len(self._ready) >= 8192 and self._ready[4096] < start / self.sample_rate - 1.0:
                del self._ready[:4096], self._off[:4096]  # long past: no block looks back there
            self._ready.append(ready)
            self._off.append(off_cpu)
        due = (start + self.delay) / self.sample_rate
        if ready > due:
            self.late.append(start)
            if off_cpu is not None:
                # off-processor time since the last block ready before this block's first
                # sample's time in the piece (see the class's docstring)
                i = bisect.bisect_left(self._ready, start / self.sample_rate) - 1
                if off_cpu - (self._off[i] if i >= 0 else 0.0) >= ready - due:
                    self.stalled += 1
        while self._waiting and self._waiting[0][0] < start + n:
            sample, arrival = self._waiting.popleft()
            self.latency.append(ready + (max(sample, start) - start) / self.sample_rate - arrival)

    def report(self) -> dict:
        ms = 1000.0
        block_s = self.block / self.sample_rate
        return {
            "sample_rate": self.sample_rate,
            "block_samples": self.block,
            "block_ms": round(block_s * ms, 4),
            "output_delay_ms": round(self.delay / self.sample_rate * ms, 4),
            "blocks": len(self.compute),
            "changes": len(self.latency),
            "underruns": len(self.late),
            "late_blocks_first": self.late[:20],
            **({"underruns_stalled": self.stalled,
                "off_cpu_ms": round(self._off[-1] * ms, 1)} if self._off else {}),
            "latency_ms": distribution([v * ms for v in self.latency]),
            "compute_ms": distribution([v * ms for v in self.compute]),
            "headroom": distribution([v / block_s for v in self.compute]),
        }

    def status(self, now: float) -> str:
        """One line for a terminal: where the session is and its latency so far."""
        lat = np.asarray(self.latency[-2000:]) * 1000.0
        comp = np.asarray(self.compute[-2000:]) * 1000.0
        block_ms = self.block / self.sample_rate * 1000.0
        parts = [f"{now:7.1f} s"]
        if len(lat):
            parts.append(f"latency p50 {np.percentile(lat, 50):.1f} p99 "
                         f"{np.percentile(lat, 99):.1f} max {lat.max():.1f} ms")
        if len(comp):
            parts.append(f"compute {np.mean(comp):.2f} ms/block "
                         f"({np.mean(comp) / block_ms:.0%} of {block_ms:g} ms)")
        parts.append(f"underruns {len(self.late)}")
        return "  ".join(parts)


# -- the session -----------------------------------------------------------------------------


class Session:
    """A generator played against a clock: key changes from `source` as they arrive, blocks out
    to `sinks` as soon as their key states are known. `max_latency_ms` sets the output stream's
    delay for the underrun count. `on_status(meter, now)` is called about every `status_every`
    seconds. `stop()` (any thread) ends it after the current block."""

    def __init__(
        self,
        generator: LiveGenerator,
        source: KeyInput,
        sinks: Sequence[Sink] = (),
        clock: Clock | None = None,
        max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
        on_status: Callable[[Meter, float], None] | None = None,
        status_every: float = 0.25,
    ) -> None:
        self.gen = generator
        self.source = source
        self.sinks = list(sinks)
        self.clock = clock or RealClock()
        sr = generator.sample_rate
        delay = int(round(max_latency_ms * sr / 1000.0))
        self.meter = Meter(sr, generator.block, delay)
        self.on_status = on_status
        self.status_every = status_every
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        if self.source.wake is not None:
            self.source.wake.set()

    def run(self) -> dict:
        """Play until the source's end (or `stop`); the meter's report."""
        sr, clock = self.gen.sample_rate, self.clock
        clock.start()
        self.source.start(clock, sr)
        end = self.source.end()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)  # the decoder's thread waits less for the GIL
        # no cyclic garbage collection while it plays (measured, CPU time): a full pass took
        # ~90 ms mid-session; with the objects made before frozen, conditioning calls that met
        # a young-generation pass still took 20-28 ms, and none did with the collector off. A
        # session makes almost no cyclic garbage (17 objects in 40 s), collected after it
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run(end)
        finally:
            if collecting:
                gc.enable()
            sys.setswitchinterval(interval)

    def _run(self, end: int | None) -> dict:
        gen, sr, clock = self.gen, self.gen.sample_rate, self.clock
        timer = getattr(clock, "timer", time.perf_counter)
        next_status = self.status_every
        # polling on the wall clock: this thread's time off the processor, for the stalled
        # underruns (sleeping, or waiting for a conditioning thread, it is off it by choice)
        wall = isinstance(clock, RealClock) and clock.spin is None and not gen.background
        off0 = time.perf_counter() - time.thread_time()
        while not self._stopped.is_set() and (end is None or gen.t < end):
            known = int(math.floor(clock.now() * sr))  # samples before it are past
            arrived = self.source.poll(known)
            for c in arrived:
                if gen.add_change(c.sample, c.state):
                    self.meter.change(c)
            if arrived:
                gen.prefetch()  # read the change now, within the lookahead
            while gen.needed() <= known and (end is None or gen.t < end):
                n = gen.block if end is None else min(gen.block, end - gen.t)
                start = gen.t
                began = timer()
                pcm = gen.next_block(n)
                compute = timer() - began
                for sink in self.sinks:
                    sink.write(pcm)
                off = time.perf_counter() - time.thread_time() - off0 if wall else None
                self.meter.block_done(start, n, compute, clock.now(), off)
            now = clock.now()
            if self.on_status is not None and now >= next_status:
                self.on_status(self.meter, now)
                next_status = now + self.status_every
            if end is not None and gen.t >= end:
                break
            gen.prefetch()
            until = at_sample(gen.needed(), sr)
            due = self.source.next_time()
            if due is not None:
                until = min(until, due)
            clock.wait(until, self.source.wake)
        return self.meter.report()
