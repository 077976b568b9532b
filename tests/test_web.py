"""The web page (`deepsynth serve`): its work without a browser, its clean refusal without
Gradio, and end to end in a real headless Chromium (Debian's) driven by Playwright: a MIDI file
uploaded, a playable video of its generated sound in the page, an error shown as a message.

The browser test skips where Gradio, Playwright or Chromium is missing; `.ci/run` installs them
and sets DEEPSYNTH_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from midi_factory import random_midi, save

from deepsynth.cli import main
from deepsynth.errors import DeepSynthError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _missing_for_browser() -> str | None:
    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (make web-deps)"
    if not os.access(CHROMIUM, os.X_OK):
        return "no chromium (apt-get install chromium)"
    return None


def _require_browser() -> None:
    missing = _missing_for_browser()
    if missing is None:
        return
    if os.environ.get("DEEPSYNTH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test must run here: {missing}")
    pytest.skip(missing)


def test_serve_without_gradio_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["serve", "--port", "7999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'deepsynth[web]'" in err[0]


def test_app_generates_from_midi_with_truth_and_spectrograms(tmp_path):
    from deepsynth.web import App

    app = App(workdir=tmp_path / "work", transcribe=False)
    midi = save(random_midi(21), tmp_path / "song.mid")
    seen = []
    result = app.run(midi, temperature=0.8, seed=4, seconds=1.5,
                     progress=lambda f, what: seen.append((f, what)))
    assert len(result.generated) == int(1.5 * result.sample_rate)
    assert result.truth_video is not None and result.comparison.exists()
    for video in (result.generated_video, result.truth_video):
        with av.open(str(video)) as c:
            assert c.streams.video[0].codec_context.profile == "High"
            assert c.streams.audio[0].codec_context.name == "aac"
    fractions = [f for f, what in seen if what.startswith("generating")]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    again = app.run(midi, temperature=0.8, seed=4, seconds=1.5)  # the same seed, the same sound
    assert np.array_equal(again.generated, result.generated)
    from_video = app.run(result.generated_video, seed=4, seconds=1.0)  # a keyboard video
    assert from_video.truth_video is None and len(from_video.generated) == result.sample_rate


@pytest.mark.parametrize("upload, demo, seed, seconds, message", [
    (None, False, 0, 5, "upload a MIDI file or a keyboard video"),
    ("notes.txt", False, 0, 5, "give a MIDI file"),
    ("song.mid", False, 1.5, 5, "seed must be a whole number"),
    ("song.mid", False, 0, 0, "seconds to generate must be"),
])
def test_app_refuses_bad_requests_in_one_line(tmp_path, upload, demo, seed, seconds, message):
    from deepsynth.web import App

    app = App(workdir=tmp_path)
    if upload == "song.mid":
        upload = save(random_midi(22), tmp_path / upload)
    with pytest.raises(DeepSynthError, match=message) as e:
        app.run(upload, demo, None, seed, seconds)
    assert "\n" not in str(e.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepsynth", "serve", "--port", str(port), "--workdir",
         str(workdir), "--max-seconds", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 90
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "DeepSynth is at" in line:
            return proc
    proc.kill()
    raise AssertionError("deepsynth serve did not start:\n" + "".join(lines[-30:]))


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _video_state(page, elem_id: str) -> dict:
    return page.evaluate(
        """id => { const v = document.querySelector('#' + id + ' video');
                   return v ? {src: v.currentSrc || v.src, ready: v.readyState,
                               duration: v.duration, error: v.error && v.error.code}
                            : null; }""", elem_id)


def test_page_in_a_real_browser_uploads_midi_and_plays_the_generated_video(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    midi = save(random_midi(23), tmp_path / "upload.mid")
    port = _free_port()
    server = _start_server(port, tmp_path / "work")
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                # a closed network: only the page's own server is reached
                page.route("**/*", lambda route: route.continue_()
                           if route.request.url.startswith(url) else route.abort())
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.locator("#generate").wait_for(timeout=60_000)

                # no file yet: the page says so in one line (not a traceback)
                page.locator("#generate").click()
                toast = page.get_by_text("upload a MIDI file or a keyboard video")
                toast.first.wait_for(timeout=30_000)
                assert "Traceback" not in page.content()

                page.locator("#upload input[type=file]").set_input_files(str(midi))
                page.get_by_text("upload.mid").first.wait_for(timeout=30_000)
                page.locator("#seconds input[type=number]").fill("3")
                page.locator("#seconds input[type=number]").press("Enter")
                page.locator("#generate").click()
                page.wait_for_function(
                    """() => ['generated', 'truth'].every(id => {
                               const v = document.querySelector('#' + id + ' video');
                               return v && v.readyState >= 1 && v.duration > 0; })""",
                    timeout=90_000)
                generated = _video_state(page, "generated")
                truth = _video_state(page, "truth")
                page.wait_for_function(
                    "() => document.querySelector('#comparison img') !== null", timeout=30_000)
                summary = page.locator("#summary").inner_text()
                page.screenshot(path=str(os.environ.get("DEEPSYNTH_WEB_SCREENSHOT",
                                                        tmp_path / "page.png")), full_page=True)
            finally:
                browser.close()
        # the file the page plays, as served (no proxy: the loopback)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(generated["src"], timeout=30) as r:
            (tmp_path / "served.mp4").write_bytes(r.read())
    finally:
        _stop(server)
    assert generated["error"] is None and abs(generated["duration"] - 3.0) < 0.2, generated
    assert truth is not None and truth["duration"] > 0, truth
    assert "upload.mid" in summary and "3.0 s generated" in summary
    assert "Transcription" in summary  # the F1, or why it was skipped
    # the file the page plays is in the players' format, with the generated sound
    with av.open(str(tmp_path / "served.mp4")) as c:
        v = c.streams.video[0].codec_context
        assert (v.name, v.profile, v.width % 2, v.height % 2) == ("h264", "High", 0, 0)
        assert c.streams.audio[0].codec_context.name == "aac"
        assert sum(f.samples for f in c.decode(audio=0)) > 0
