"""The training loop: `train(data, out, preset, config, options)`.

    from deepsynth.train import TrainConfig, RunOptions, train
    result = train("data/piano", "runs/small", "small", TrainConfig(val_every=500),
                   RunOptions(max_minutes=30))
    model, payload = deepsynth.checkpoint.load_checkpoint(result.best)

One process, or one of several under torchrun (DistributedDataParallel; only rank 0 writes).
A run folder holds last.pt (resumable), best.pt, metrics.csv, loss.png, tb/ and config.json.
Stops at the recipe's epochs, or earlier at RunOptions.max_steps / max_minutes / SIGTERM / SIGINT
(the first one: the current step finishes and last.pt is written; a second SIGINT aborts).
The loop (`follow_recipe`) drives a run object (run.py: opened fresh or resumed from last.pt):
for each batch, a step, the metrics row, validation when due, last.pt when due, the stop.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepsynth.model.deepsynth import DeepSynth
from deepsynth.train import distributed
from deepsynth.train.config import RunOptions, TrainConfig
from deepsynth.train.run import CONFIG_JSON, Run
from deepsynth.train.state import BEST, LAST

__all__ = ["CONFIG_JSON", "TrainResult", "train"]


@dataclass
class TrainResult:
    out: Path
    preset: str
    config: TrainConfig
    step: int
    epoch: int
    best_val_ce: float
    best_step: int
    stopped: str  # "epochs", "max_steps", "max_minutes", "signal"; "done": nothing was left
    model: DeepSynth  # this process's model (on its device) after the last step
    replica_difference: float = 0.0  # torchrun: largest weight difference to rank 0 (0 expected)
    rank: int = 0

    @property
    def last(self) -> Path:
        return self.out / LAST

    @property
    def best(self) -> Path:
        return self.out / BEST


class StopFlag:
    """SIGTERM / SIGINT set a flag the loop reads between steps (main thread only)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | None = None,
    config: TrainConfig | dict[str, Any] | None = None,
    options: RunOptions | None = None,
    init_from: str | os.PathLike | None = None,
) -> TrainResult:
    """Train (or resume) a run; see the module doc. `config`: a TrainConfig, or a dict of fields
    to change (from the defaults, or from the checkpoint's recipe when resuming). `init_from`: a
    checkpoint whose weights a fresh run starts from (ignored when the run is resumed)."""
    options = options or RunOptions()
    env = distributed.setup(options.device)
    try:
        with Run.open(env, Path(data), Path(out), preset, config, options,
                      init_from) as run:
            stopped = follow_recipe(run)
        difference = distributed.max_replica_difference(run.model, env)
        distributed.barrier(env)
        state = run.state
        return TrainResult(run.out, run.preset_name, run.cfg, state.step, state.epoch,
                           state.best_val_ce, state.best_step, stopped, run.model, difference,
                           env.rank)
    finally:
        distributed.teardown(env)


def follow_recipe(run: Run) -> str:
    """The paper's recipe, step after step, until the epochs are done or a limit or a signal
    stops the run; returns why it stopped (TrainResult.stopped)."""
    if run.finished():
        return "done"
    with StopFlag() as signals:
        for batch in run.batches():
            run.step(batch)
            stop = run.should_stop(signals.raised)
            validate = run.validation_due(stop)
            run.log(validate)
            if validate or stop is not None or run.checkpoint_due():
                run.checkpoint()
            if stop is not None:
                return stop
    return "epochs"
