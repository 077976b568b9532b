"""Sub-command: serve, the web page (a Gradio app over the Python API; deepsynth.web)."""

from __future__ import annotations

import sys

from deepsynth.errors import DeepSynthError


def cmd_serve(args) -> int:
    from deepsynth.web import require_gradio, serve

    require_gradio()  # one line and exit 2 without the web extra, before the model loads
    if args.max_seconds <= 0:
        raise DeepSynthError(f"--max-seconds must be positive, got {args.max_seconds}")

    def ready(url: str) -> None:
        print(f"DeepSynth is at {url}  (Ctrl+C stops it)", flush=True)

    print("loading the model ...", file=sys.stderr, flush=True)
    serve(args.port, args.host, args.checkpoint, args.max_seconds, args.workdir, ready)
    return 0


def register(sub) -> None:
    """Add `serve` to the `deepsynth` sub-command parser."""
    from deepsynth.web import DEFAULT_PORT, INSTALL_HINT, MAX_SECONDS

    p = sub.add_parser(
        "serve", help="the web page: upload a MIDI file or a keyboard video, hear it generated",
        description="Serve a local web page (Gradio) to try DeepSynth in the browser: upload a "
        "MIDI file or a keyboard video, or take the demo piece; choose temperature and seed; "
        "watch the keyboard video with the generated sound beside the ground truth. Needs the "
        f"web extra: {INSTALL_HINT}.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "for the network)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="trained model (default: the checkpoint shipped with DeepSynth)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, metavar="S",
                   help=f"most seconds one request may generate (default {MAX_SECONDS:g})")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the generated files go (default: a new temporary folder)")
    p.set_defaults(func=cmd_serve)
