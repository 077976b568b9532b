"""The live instrument's hardware: MIDI input ports (python-rtmidi) and the sound card
(sounddevice, on PortAudio), both optional (`pip install 'deepsynth[live]'`) and imported only
when used; and the streaming resampler from the model's rate to the card's.

A missing extra, library, port or device is a DeepSynthError with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Iterator

import numpy as np

from deepsynth.errors import DeepSynthError
from deepsynth.generate.live import MessageInput

LIVE_EXTRA = "pip install 'deepsynth[live]'"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what C libraries print on fd 2 (ALSA's complaints when it has no sequencer)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- MIDI ports ------------------------------------------------------------------------------


def _rtmidi():
    try:
        import rtmidi
    except ImportError:
        raise DeepSynthError(f"MIDI input ports need python-rtmidi: {LIVE_EXTRA} "
                             "(or play a file: --midi-file)") from None
    return rtmidi


def require_midi() -> None:
    """DeepSynthError unless python-rtmidi can be imported."""
    _rtmidi()


def require_sound() -> None:
    """DeepSynthError unless sounddevice and its PortAudio library can be loaded."""
    _sounddevice()


def _midi_in():
    rtmidi = _rtmidi()
    try:
        with _quiet_stderr():
            return rtmidi.MidiIn()
    except rtmidi.RtMidiError as e:
        raise DeepSynthError(f"no MIDI system to read ports from here ({e}); play a file "
                             "with --midi-file") from None


def midi_ports() -> list[str]:
    """The names of the MIDI input ports (a USB keyboard shows up as one)."""
    midi = _midi_in()
    try:
        return list(midi.get_ports())
    finally:
        midi.delete()


def _choose(port: str | None, names: list[str]) -> int:
    if not names:
        raise DeepSynthError("no MIDI input port: plug in a keyboard (deepsynth play "
                             "--list-ports), or play a file with --midi-file")
    if port is None:
        return 0
    if port.isdigit() and int(port) < len(names):
        return int(port)
    matches = [i for i, n in enumerate(names) if port.lower() in n.lower()]
    if not matches:
        raise DeepSynthError(f"no MIDI input port {port!r}; there are: {', '.join(names)}")
    return matches[0]


class PortInput(MessageInput):
    """Key states from a MIDI input port (its number or part of its name; None: the first),
    each message dated when it arrives (python-rtmidi's callback thread)."""

    def __init__(self, port: str | None = None, duration: int | None = None) -> None:
        super().__init__(duration)
        self._midi = _midi_in()
        names = list(self._midi.get_ports())
        index = _choose(port, names)
        self.name = names[index]
        self._midi.ignore_types(sysex=True, timing=True, active_sense=True)
        self._midi.set_callback(self._on_message)
        try:
            self._midi.open_port(index)
        except _rtmidi().RtMidiError as e:
            raise DeepSynthError(f"cannot open MIDI port {self.name!r}: {e}") from None

    def _on_message(self, event, data=None) -> None:
        message, _delta = event
        self.push(message)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._midi.close_port()
            self._midi.delete()


# -- the sound card ----------------------------------------------------------------------------


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise DeepSynthError(f"sound card output needs sounddevice: {LIVE_EXTRA} (or --null, "
                             "or -o FILE.wav alone with --null)") from None
    except OSError as e:  # the module is there, the PortAudio library is not
        raise DeepSynthError(f"sound card output needs the PortAudio library ({e}): install "
                             "it (Debian: apt-get install libportaudio2), or use --null") from None
    return sounddevice


def audio_devices() -> list[dict]:
    """The sound card outputs: index, name, channels, default rate, and which is the default."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device[1]
    except Exception as e:  # PortAudio's own errors
        raise DeepSynthError(f"cannot list sound devices: {e}") from None
    return [{"index": i, "name": d["name"], "channels": d["max_output_channels"],
             "rate": d["default_samplerate"], "default": i == default}
            for i, d in enumerate(devices) if d["max_output_channels"] > 0]


class StreamingResampler:
    """Rational-rate resampling block by block: the polyphase form of
    scipy.signal.upfirdn(h, x, up, down) with a Kaiser-windowed low-pass h, fed the signal in
    pieces of any size (the output equals that of the whole signal, up to float rounding).

    Causal, for a live stream: every output sample is emitted as soon as its last input
    arrives, the filter's delay (`delay`, about 2 ms at 48 kHz) is the only latency it adds.
    The simulator's resampler (deepsynth.sim.synth.StreamingResampler) is the other kind:
    centred like resample_poly, bit-identical to it, emitting in large pieces, for files."""

    def __init__(self, rate_in: int, rate_out: int, taps_per_phase: int = 16) -> None:
        from scipy.signal import firwin

        g = math.gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        self.taps = taps_per_phase
        n = taps_per_phase * self.up
        self.h = firwin(n, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        self._phases = self.h.reshape(taps_per_phase, self.up).T.copy()  # [phase, tap]
        self._hist = np.zeros(taps_per_phase - 1)
        self._n_in = 0
        self._j = 0

    @property
    def delay(self) -> float:
        """The filter's delay, in output samples."""
        return (len(self.h) - 1) / 2 / self.down

    def process(self, x: np.ndarray) -> np.ndarray:
        """The output samples that the input so far determines (float64)."""
        x = np.asarray(x, np.float64)
        buf = np.concatenate([self._hist, x])
        base = self._n_in - (self.taps - 1)  # the input index of buf[0]
        self._n_in += len(x)
        end = -(-self._n_in * self.up // self.down)
        j = np.arange(self._j, end)
        m = j * self.down
        idx = (m // self.up)[:, None] - np.arange(self.taps)[None, :] - base
        y = np.einsum("jq,jq->j", self._phases[m % self.up], buf[idx])
        self._j = end
        self._hist = buf[len(buf) - (self.taps - 1):]
        return y


class CardSink:
    """Blocks out to a sound card (sounddevice; `device`: its number or part of its name, None:
    the default output) at its own rate, through `StreamingResampler`. `underflows`: the times
    the card asked for audio the generator had not made yet."""

    def __init__(self, sample_rate: int, device: str | None = None) -> None:
        sd = _sounddevice()
        dev = int(device) if device is not None and device.isdigit() else device
        try:
            info = sd.query_devices(dev, "output")
        except (ValueError, sd.PortAudioError) as e:
            raise DeepSynthError(f"no sound card output {device!r} ({e}); see deepsynth play "
                                 "--list-devices, or use --null") from None
        self.name = info["name"]
        self.rate = int(info["default_samplerate"])
        self.resampler = StreamingResampler(sample_rate, self.rate)
        self._queue: deque[np.ndarray] = deque()
        self._head = np.zeros(0, np.float32)
        self._lock = threading.Lock()
        self.underflows = 0
        self._started = False
        try:
            self.stream = sd.OutputStream(device=dev, samplerate=self.rate, channels=1,
                                          dtype="float32", latency="low",
                                          callback=self._callback)
        except Exception as e:
            raise DeepSynthError(f"cannot open sound card {self.name!r}: {e}") from None

    @property
    def latency(self) -> float:
        """The card's own output buffer, seconds (not part of the algorithmic latency)."""
        return float(self.stream.latency)

    def write(self, pcm: np.ndarray) -> None:
        y = self.resampler.process(pcm.astype(np.float32) / 32768.0).astype(np.float32)
        with self._lock:
            self._queue.append(y)
        if not self._started:
            self.stream.start()
            self._started = True

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.underflows += 1
        out = outdata[:, 0]
        filled = 0
        with self._lock:
            while filled < frames:
                if not len(self._head):
                    if not self._queue:
                        break
                    self._head = self._queue.popleft()
                take = min(frames - filled, len(self._head))
                out[filled : filled + take] = self._head[:take]
                self._head = self._head[take:]
                filled += take
        if filled < frames:
            out[filled:] = 0.0
            self.underflows += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.stop()
            self.stream.close()
