"""Training (paper section 5): the recipe, the loop, its checkpoints and logs.

    config.py       TrainConfig (the recipe, saved in every checkpoint), RunOptions (how to run)
    schedule.py     the step-decay learning rate
    objective.py    CE over the segment's own samples, the L2 penalty
    data.py         batches per epoch and per process, loaders, frames rendered on the device
    step.py         one optimizer step; the validation pass
    state.py        train state, random generators, last.pt / best.pt
    logs.py         metrics.csv, TensorBoard, loss.png, the progress bar
    distributed.py  torchrun / DistributedDataParallel plumbing
    run.py          the run object: opened fresh or resumed; step, log, validate, checkpoint
    loop.py         train(): the loop over a run's batches

Train:   train("data/piano", "runs/small", "small", TrainConfig(...), RunOptions(...))
Load:    model, payload = deepsynth.checkpoint.load_checkpoint("runs/small/best.pt")
         payload["extra"]["preset"], TrainConfig.from_dict(payload["extra"]["train_config"])
"""

from deepsynth.train.config import RunOptions, TrainConfig
from deepsynth.train.loop import TrainResult, train
from deepsynth.train.schedule import lr_at
from deepsynth.train.state import BEST, LAST, TrainingCheckpoint, load_training_state

__all__ = [
    "BEST",
    "LAST",
    "RunOptions",
    "TrainConfig",
    "TrainResult",
    "TrainingCheckpoint",
    "load_training_state",
    "lr_at",
    "train",
]
