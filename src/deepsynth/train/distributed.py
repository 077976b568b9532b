"""One process or many (torchrun): who this process is, its device, and the few collective
operations training needs. Without torchrun's environment (WORLD_SIZE unset or 1) every function
here is a no-op on a single process.

    torchrun --nproc_per_node 8 -m deepsynth train ...            # one machine, 8 GPUs
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 -m deepsynth train ...

Backend: NCCL on CUDA, gloo on CPU (so the multi-process path is tested on a laptop).
Only rank 0 writes files and logs; every rank computes, validation is shared among them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepsynth.errors import DeepSynthError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(request: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' -> this process's GPU (LOCAL_RANK)."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeepSynthError("--device cuda: no CUDA device is available here")
        if request == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(request)
    if request != "cpu":
        raise DeepSynthError(f"unknown device {request!r} (auto, cpu or cuda)")
    return torch.device("cpu")


def setup(request: str = "auto") -> DistEnv:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), pick the
    device and, with several processes, join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(request, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, device)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float] | torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Element-wise sum over all processes, as a float64 tensor on the CPU."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if env.distributed:
        t = t.to(env.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def max_replica_difference(model: torch.nn.Module, env: DistEnv) -> float:
    """Largest absolute difference between this process's parameters and rank 0's, maximised
    over processes (0.0 means every replica holds the same weights; DDP keeps them so)."""
    if not env.distributed:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1).double()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())
