"""Data-parallel training (DDP) across the processes `torchrun` starts: which process this is, and
the few collectives the trainer needs. With one process (no torchrun) every function here is a
no-op, so the trainer has one code path.

    torchrun --standalone --nproc_per_node=8 --no-python resnet-repro train ...

Each process trains on its slice of every batch (the spec's batch_size is the total, 256 in the
paper); DDP averages the gradients, so the update is the one a single process would make on the
whole batch, except that BatchNorm statistics are per process, as in the paper's multi-GPU set-up.
NCCL on CUDA (one GPU per process), gloo on CPU (for tests)."""

import datetime
import os

import torch
import torch.distributed as dist

from resnet_repro.errors import ReproError


class World:
    """This process's place among torchrun's processes (from the environment torchrun sets)."""

    def __init__(self, environ=os.environ):
        self.size = int(environ.get("WORLD_SIZE", "1"))
        self.rank = int(environ.get("RANK", "0"))
        self.local_rank = int(environ.get("LOCAL_RANK", "0"))

    @property
    def main(self):
        return self.rank == 0

    @property
    def active(self):
        return self.size > 1


WORLD = World()


def start(device):
    """Join the process group (once) and return this process's device: cuda:LOCAL_RANK on CUDA."""
    if not WORLD.active:
        return device
    if device.type == "cuda":
        if WORLD.local_rank >= torch.cuda.device_count():
            raise ReproError(
                f"process {WORLD.local_rank} of {WORLD.size} has no GPU: this node has "
                f"{torch.cuda.device_count()}; start one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", WORLD.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # long timeout: the other processes wait in a collective while process 0 evaluates
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
    return device


def finish():
    if WORLD.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model, device):
    """The module to run forward/backward through: DDP around `model` (which keeps its parameters,
    so checkpoints save `model` itself, with the same keys as a single-process run)."""
    if not WORLD.active:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def local_batch_size(batch_size):
    if batch_size % WORLD.size:
        raise ReproError(f"batch_size {batch_size} does not split evenly over {WORLD.size} processes")
    return batch_size // WORLD.size


def summed(t):
    """The sum of `t` over all processes (a new tensor)."""
    t = t.clone()
    if WORLD.active:
        dist.all_reduce(t)
    return t


def any_true(flag, device):
    """True on every process if `flag` is true on any (so all of them take the same branch)."""
    if not WORLD.active:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(values, device):
    """Process 0's list of floats, on every process."""
    if not WORLD.active:
        return values
    t = torch.tensor(values if WORLD.main else [0.0] * len(values), dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def gathered(obj):
    """[obj of process 0, obj of process 1, ...] on every process."""
    if not WORLD.active:
        return [obj]
    out = [None] * WORLD.size
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if WORLD.active:
        dist.barrier()
