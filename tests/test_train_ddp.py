"""DistributedDataParallel on the CPU: 2 processes, gloo. Both replicas end with the same
weights, only rank 0 writes, and two processes of batch 3 take the same steps as one process of
batch 6 (the per-process shares of each global batch are disjoint and together the same)."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from deepsynth.checkpoint import load_checkpoint
from deepsynth.train import RunOptions, train
from deepsynth.train.logs import read_metrics

RECIPE = {"window_seconds": 1.0, "overlap_seconds": 0.0, "val_segments": 6, "val_every": 2,
          "log_every": 1}
STEPS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, store: str, tmp: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    # each rank is given its own folder: only rank 0's may exist afterwards
    out = os.path.join(tmp, f"out-rank{rank}")
    result = train(store, out, "tiny", RECIPE,
                   RunOptions(max_steps=STEPS, device="cpu", threads=1, progress=False))
    torch.save({"state": result.model.state_dict(), "difference": result.replica_difference,
                "step": result.step}, os.path.join(tmp, f"weights-rank{rank}.pt"))



def test_two_gloo_processes_agree_and_match_one_process_of_double_batch(store, tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(store), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0["step"] == w1["step"] == STEPS
    assert w0["difference"] == w1["difference"] == 0.0
    for k in w0["state"]:
        assert torch.equal(w0["state"][k], w1["state"][k]), k
    assert (tmp_path / "out-rank0" / "last.pt").exists()
    assert not (tmp_path / "out-rank1").exists()  # rank 1 wrote nothing
    rows = read_metrics(tmp_path / "out-rank0" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    saved = load_checkpoint(tmp_path / "out-rank0" / "last.pt")[0].state_dict()
    for k in saved:
        assert torch.equal(saved[k], w0["state"][k])

    # one process, batch 6: the same global batches, so (up to summation order) the same run
    torch.set_num_threads(1)
    single = tmp_path / "single"
    train(store, single, "tiny", dict(RECIPE, batch_size=6),
          RunOptions(max_steps=STEPS, threads=1, progress=False, tensorboard=False))
    for a, b in zip(read_metrics(single / "metrics.csv"), rows, strict=True):
        assert b["train_ce"] == pytest.approx(a["train_ce"], rel=1e-5)
        if a["val_ce"] is not None:
            assert b["val_ce"] == pytest.approx(a["val_ce"], rel=1e-5)
    shutil.rmtree(tmp_path / "single")


@pytest.mark.slow
def test_torchrun_cli_two_processes(store, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), "-m", "deepsynth", "train", "--data", str(store),
           "--preset", "tiny", "--out", str(out), "--max-steps", "3", "--window-seconds", "1",
           "--overlap-seconds", "0", "--val-segments", "6", "--threads", "1", "-q",
           "--log-every", "1", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("stopped (max_steps) at step 3") == 1  # rank 0 alone reports
    assert [row["step"] for row in read_metrics(out / "metrics.csv")] == [1, 2, 3]
