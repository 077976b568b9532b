"""The web page of `deepsynth serve`: a Gradio app over the Python API (deepsynth.api).

Upload a MIDI file or a keyboard video (or take the demo piece), choose the temperature, the
seed and how many seconds to generate, and watch the keyboard video with the generated sound;
for MIDI input beside the ground truth (the simulator's piano), with the spectrograms of both
and, when the evaluation extra is installed, the transcription F1 of each. Progress shows while
it generates; bad input shows as a one-line message in the page.

Gradio is an optional extra (`pip install 'deepsynth[web]'`); `require_gradio` says how to get
it. The page needs no network: analytics and version checks are off, the fonts are the
system's. The work is in `App` (no Gradio in it), the page in `build_page`.
"""

from __future__ import annotations

import html
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepsynth.errors import DeepSynthError

if TYPE_CHECKING:
    import numpy as np

    from deepsynth.api import Synth

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
DEFAULT_SECONDS = 20.0  # generated per request unless asked otherwise
MAX_SECONDS = 120.0
MIDI_SUFFIXES = (".mid", ".midi")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
INSTALL_HINT = "pip install 'deepsynth[web]'"
# no telemetry, no version check, no hub: the page works on a closed network
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_SERVER_NAME": "127.0.0.1"}

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is being done)


class WebUnavailable(DeepSynthError):
    """Gradio, which the page needs, is not installed."""


def offline_environment() -> None:
    """Set what keeps Gradio off the network (unless the caller set it already)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def require_gradio() -> Any:
    """The gradio module; WebUnavailable (one line, with the install command) without it."""
    offline_environment()
    try:
        import gradio
    except ImportError as e:
        raise WebUnavailable(f"deepsynth serve needs Gradio ({e.name or e} is not installed): "
                             f"{INSTALL_HINT}") from None
    return gradio


@dataclass(frozen=True)
class Result:
    """What one request made (files in its own folder)."""

    generated_video: Path  # the keyboard video with the generated sound
    truth_video: Path | None  # ... with the simulator's sound (MIDI input)
    comparison: Path | None  # spectrograms, ground truth above generated (MIDI input)
    summary: str  # a few lines of Markdown: what was generated, how fast, the F1s
    generated: np.ndarray  # int16 audio at `sample_rate`
    sample_rate: int


class App:
    """The page's work, without the page: one request at a time through the Python API."""

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        workdir: str | os.PathLike | None = None,
        max_seconds: float = MAX_SECONDS,
        transcribe: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="deepsynth-web-"))
        self.max_seconds = float(max_seconds)
        self.transcribe = transcribe
        self._synth: Synth | None = None

    @property
    def synth(self) -> Synth:
        """The model, loaded on first use."""
        if self._synth is None:
            import deepsynth

            self._synth = deepsynth.load(self.checkpoint)
        return self._synth

    def demo_midi(self) -> Path:
        """The demo piece (what `deepsynth demo` composes), written once into the workdir."""
        from deepsynth.sim.compose import write_demo_midi

        path = self.workdir / "demo.mid"
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            write_demo_midi(path)
        return path

    def run(
        self,
        upload: str | os.PathLike | None,
        demo: bool = False,
        temperature: float | None = None,
        seed: int = 0,
        seconds: float = DEFAULT_SECONDS,
        progress: Progress | None = None,
    ) -> Result:
        """Generate the sound of `upload` (a MIDI file or a keyboard video), or of the demo
        piece, for its first `seconds`; DeepSynthError (one line) on bad input."""
        report = progress or (lambda fraction, what: None)
        path = self._input(upload, demo)
        seed = _seed(seed)
        if temperature is not None:
            temperature = float(temperature)
        seconds = float(seconds)
        if not 0 < seconds <= self.max_seconds:
            raise DeepSynthError(f"seconds to generate must be from 0 to {self.max_seconds:g}, "
                                 f"got {seconds:g}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        report(0.0, "loading the model")
        synth = self.synth
        sr = synth.sample_rate
        is_midi = path.suffix.lower() in MIDI_SUFFIXES
        report(0.0, "simulating the MIDI file" if is_midi else "reading the keyboard video")
        if is_midi:
            import deepsynth

            source: Any = deepsynth.simulate(path, sample_rate=sr)
            length = source.seconds
        else:
            source = synth.source(path)
            length = source.n_samples / sr
        duration = min(seconds, length)

        def generating(done: int, total: int) -> None:
            report(done / total, f"generating {duration:.1f} s of sound")

        began = time.perf_counter()
        audio = synth.synthesize(source, duration=duration, temperature=temperature, seed=seed,
                                 progress=generating)
        took = time.perf_counter() - began
        report(1.0, "writing the videos")
        generated_video = synth.write_video(out / "generated.mp4", source, audio)
        temp = synth.temperature if temperature is None else temperature
        lines = [f"**{path.name}**: {len(audio) / sr:.1f} s generated in {took:.1f} s "
                 f"({len(audio) / sr / max(took, 1e-9):.1f}x real time), temperature "
                 f"{temp:g}, seed {seed}."]
        truth_video = comparison = None
        if is_midi:
            truth = source.audio[: len(audio)]
            truth_video = synth.write_video(out / "ground_truth.mp4", source, truth)
            report(1.0, "drawing the spectrograms")
            from deepsynth.evaluate.plots import spectrogram_comparison_plot

            comparison = spectrogram_comparison_plot(
                audio, truth, sr, out / "comparison.png",
                title=f"{path.name}: ground truth vs generated from the video")
            lines.append(self._f1_line(source, audio, truth, report))
        if took > 0:
            log.info("%s: %.1f s generated in %.1f s", path.name, len(audio) / sr, took)
        return Result(generated_video, truth_video, comparison, "\n\n".join(lines), audio, sr)

    def _input(self, upload: str | os.PathLike | None, demo: bool) -> Path:
        if demo:
            return self.demo_midi()
        if upload is None or str(upload) == "":
            raise DeepSynthError("upload a MIDI file or a keyboard video, or take the demo piece")
        path = Path(upload)
        if path.suffix.lower() not in MIDI_SUFFIXES + VIDEO_SUFFIXES:
            raise DeepSynthError(f"{path.name}: give a MIDI file ({', '.join(MIDI_SUFFIXES)}) or "
                                 f"a keyboard video ({', '.join(VIDEO_SUFFIXES)})")
        return path

    def _f1_line(self, sim, audio: np.ndarray, truth: np.ndarray, report: Progress) -> str:
        """The transcription onset F1 of the generated sound and of the ground truth against
        the notes the video shows, or why it is skipped."""
        from deepsynth.evaluate.transcriber import missing_reason, transcription_f1
        from deepsynth.sim.keystates import changes_from_states, notes_from_key_changes

        if not self.transcribe:
            return "Transcription F1: not computed here."
        reason = missing_reason()
        if reason is not None:
            return f"Transcription F1: skipped ({reason})."
        report(1.0, "transcribing both sounds")
        n = len(audio)
        shown = sim.starts < n
        changes = changes_from_states(sim.starts[shown], sim.states[shown], sim.sample_rate, n)
        notes = notes_from_key_changes(changes)
        if len(notes) == 0:
            return "Transcription F1: no note starts in the generated part."
        gen = transcription_f1(audio, sim.sample_rate, notes)
        true = transcription_f1(truth, sim.sample_rate, notes)
        if gen is None or true is None:
            return "Transcription F1: the transcriber found nothing to compare."
        return (f"Transcription onset F1 (basic-pitch against the video's notes): generated "
                f"**{gen['onset']['f1']:.2f}**, ground truth {true['onset']['f1']:.2f} "
                f"(the ceiling).")


def _seed(seed: Any) -> int:
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise DeepSynthError(f"seed must be a whole number, got {seed!r}") from None
    if not value.is_integer() or not 0 <= value < 2**32:
        raise DeepSynthError(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed}")
    return int(value)


def build_page(app: App) -> Any:
    """The Gradio Blocks of the page, wired to `app`."""
    gr = require_gradio()

    def handler(demo: bool) -> Callable:
        def generate(upload, temperature, seed, seconds, progress=gr.Progress()):  # noqa: B008
            def report(fraction: float, what: str) -> None:
                progress(fraction, desc=what)

            try:
                result = app.run(upload, demo, temperature, seed, seconds, report)
            except DeepSynthError as e:
                raise gr.Error(html.escape(str(e)), print_exception=False) from None
            except Exception as e:  # the page shows one line; the server's log has the rest
                log.exception("generation failed")
                raise gr.Error(html.escape(f"generation failed: {type(e).__name__}: {e}"),
                               print_exception=False) from None
            return (str(result.generated_video),
                    None if result.truth_video is None else str(result.truth_video),
                    None if result.comparison is None else str(result.comparison),
                    result.summary)

        return generate

    with gr.Blocks(**blocks_options(gr)) as page:
        gr.Markdown(
            "# DeepSynth\nA piano's sound from a silent video of its keyboard. Upload a MIDI "
            "file (it is simulated: its keyboard video, and the simulator's piano as the ground "
            "truth) or a keyboard video, or take the demo piece; the model hears only the "
            "video.")
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="MIDI file or keyboard video", type="filepath",
                                 file_types=list(MIDI_SUFFIXES + VIDEO_SUFFIXES),
                                 elem_id="upload")
            with gr.Column(scale=1):
                temperature = gr.Slider(0.0, 1.5, value=app_temperature(app), step=0.05,
                                        label="Temperature (0: the most likely sample)",
                                        elem_id="temperature")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed",
                                 elem_id="seed")
                seconds = gr.Slider(1, app.max_seconds, value=min(DEFAULT_SECONDS,
                                                                  app.max_seconds),
                                    step=1, label="Seconds to generate (from the start)",
                                    elem_id="seconds")
        with gr.Row():
            run = gr.Button("Generate", variant="primary", elem_id="generate")
            demo = gr.Button("Try the demo piece", elem_id="demo")
        # one above the other: the keyboard is 780 px wide
        generated = gr.Video(label="Generated from the video", interactive=False,
                             elem_id="generated")
        truth = gr.Video(label="Ground truth (the simulator's piano, MIDI input)",
                         interactive=False, elem_id="truth")
        summary = gr.Markdown(elem_id="summary")
        comparison = gr.Image(label="Spectrograms: ground truth (top) vs generated",
                              type="filepath", interactive=False, elem_id="comparison")
        inputs = [upload, temperature, seed, seconds]
        outputs = [generated, truth, comparison, summary]
        run.click(handler(False), inputs, outputs, concurrency_limit=1)
        demo.click(handler(True), inputs, outputs, concurrency_limit=1)
    return page


def _theme(gr: Any) -> Any:
    """Gradio's default look in the system's fonts: nothing is fetched from outside."""
    return gr.themes.Default(font=["system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def blocks_options(gr: Any) -> dict[str, Any]:
    """gr.Blocks' arguments (Gradio 5 takes the theme here, Gradio 6 at launch)."""
    options: dict[str, Any] = {"title": "DeepSynth"}
    if "theme" not in inspect.signature(gr.Blocks.launch).parameters:
        options["theme"] = _theme(gr)
    return options


def launch_options(gr: Any, page: Any, host: str, port: int, workdir: Path) -> dict[str, Any]:
    """launch's arguments: local only, no share link, no browser opened, the generated files
    served, and (where this Gradio has them) the theme, no footer, no run history."""
    options: dict[str, Any] = {
        "server_name": host, "server_port": port, "prevent_thread_lock": True, "quiet": True,
        "share": False, "inbrowser": False, "allowed_paths": [str(workdir)],
    }
    optional = {"theme": _theme(gr), "footer_links": [], "ssr_mode": False,
                "run_history": False}
    known = inspect.signature(page.launch).parameters
    options.update({k: v for k, v in optional.items() if k in known})
    return options


def app_temperature(app: App) -> float:
    """The temperature the page starts at: the checkpoint's recommended one."""
    return float(app.synth.temperature)


def serve(
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    checkpoint: str | os.PathLike | None = None,
    max_seconds: float = MAX_SECONDS,
    workdir: str | os.PathLike | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the page at http://HOST:PORT until interrupted. `ready(url)` is called once it
    listens."""
    gr = require_gradio()
    if not 0 < port < 65536:
        raise DeepSynthError(f"port must be from 1 to 65535, got {port}")
    app = App(checkpoint, workdir, max_seconds)
    _ = app.synth  # a bad checkpoint fails here, before the page is up
    page = build_page(app)
    try:
        page.queue(default_concurrency_limit=1).launch(**launch_options(gr, page, host, port,
                                                                        app.workdir))
    except OSError as e:
        raise DeepSynthError(f"cannot serve on {host}:{port}: {e}") from None
    url = f"http://{host}:{port}/"
    if ready is not None:
        ready(url)
    try:
        page.block_thread()
    finally:
        page.close()
