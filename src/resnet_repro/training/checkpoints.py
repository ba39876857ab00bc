"""OUT/checkpoint.pt (everything an exact resume needs) read, restored and written, the wall-time
checkpoints, and the final model OUT/model.pt."""

import time

import torch

from resnet_repro.device import precision_name
from resnet_repro.errors import ReproError
from resnet_repro.files import load_torch, save_torch
from resnet_repro.training import parallel
from resnet_repro.training.batches import aug_seed

STOP_CHECK_EVERY = 10  # with DDP, iterations between the processes' checks for a stop signal


def read_checkpoint(path, spec):
    """The checkpoint at `path`, or None where there is none; refused if trained with another spec."""
    if not path.exists():
        return None
    ckpt = load_torch(path)
    if ckpt["spec"] != spec:
        changed = sorted(k for k in set(spec) | set(ckpt["spec"]) if spec.get(k) != ckpt["spec"].get(k))
        raise ReproError(
            f"{path} was trained with a different spec (differs in: {', '.join(changed)}); "
            f"use another output directory or drop --resume"
        )
    return ckpt


def restore(ckpt, step, lr, batches, seed):
    """Put the training back where the checkpoint left it. Returns (history rows, iteration,
    elapsed_s, the number of processes that wrote it)."""
    world = parallel.WORLD
    step.model.load_state_dict(ckpt["model"])
    step.opt.load_state_dict(ckpt["optimizer"])
    lr.load_state_dict(ckpt["lr"])
    batches.load_state_dict(ckpt["batches"])
    iteration = ckpt["iteration"]
    aug_states = ckpt.get("aug_states", [ckpt["batches"].get("aug_gen")])
    if batches.aug_gen is None:  # streamed batches: every draw keyed by (seed, epoch, index), no state
        pass
    elif len(aug_states) == world.size:
        batches.aug_gen.set_state(aug_states[world.rank])
    else:  # another number of processes than the checkpoint's: fresh augmentation randomness
        batches.aug_gen.manual_seed(aug_seed(seed, world.rank) + 1_000_003 * iteration)
    if world.main:  # the sums in the checkpoint are over all processes
        step.acc.copy_(ckpt["acc"])
        step.warm.copy_(ckpt["warm"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["history"], iteration, ckpt["elapsed_s"], len(aug_states)


class Checkpoints:
    """OUT/checkpoint.pt: everything an exact resume needs (the keys stay as they are: old checkpoints
    must resume). Keeps the time of the last one for the wall-time checkpoints (spec
    checkpoint_minutes), besides the ones every checkpoint_every iterations."""

    def __init__(self, path, spec, data, num_classes):
        self.path, self.spec, self.data, self.num_classes = path, spec, data, num_classes
        self.seconds = 60 * (spec.get("checkpoint_minutes") or 0)
        self.saved_at = time.monotonic()

    def save(self, step, lr, history, iteration, done=False):
        """Every process calls this at the same iteration; process 0 writes, the others wait for it
        (torchrun stops all processes when one exits, so none may leave before the file is there)."""
        gen = self.data.batches.aug_gen  # None where the draws are keyed (streamed batches): nothing to keep
        aug_states = parallel.gathered(gen.get_state() if gen is not None else torch.zeros(0, dtype=torch.uint8))
        acc_all, warm_all = parallel.summed(step.acc), parallel.summed(step.warm)
        if parallel.WORLD.main:
            save_torch(
                {
                    "spec": self.spec,
                    "model": step.model.state_dict(),
                    "optimizer": step.opt.state_dict(),
                    "lr": lr.state_dict(),
                    "batches": self.data.batches.state_dict(),
                    "aug_states": aug_states,
                    "history": history.rows,
                    "iteration": iteration,
                    "elapsed_s": history.elapsed,
                    "acc": acc_all.cpu(),
                    "warm": warm_all.cpu(),
                    "torch_rng": torch.get_rng_state(),
                    "mean": self.data.mean.cpu(),
                    "num_classes": self.num_classes,
                    "classes": self.data.classes,
                    "world_size": parallel.WORLD.size,
                    "done": done,
                    "precision": precision_name(step.bf16),
                },
                self.path,
            )
        parallel.barrier()
        self.saved_at = time.monotonic()

    def wall_time_due(self, iteration, device):
        """checkpoint_minutes since the last checkpoint, agreed by all processes (checked every
        STOP_CHECK_EVERY iterations with DDP, like the stop signal)."""
        if not self.seconds or (parallel.WORLD.active and iteration % STOP_CHECK_EVERY):
            return False
        return parallel.any_true(time.monotonic() - self.saved_at >= self.seconds, device)


def save_model(path, spec, step, data, num_classes, iteration, rows):
    """The final model, without optimizer state: what evaluation and analysis read."""
    save_torch(
        {
            "spec": spec,
            "model": step.model.state_dict(),
            "iteration": iteration,
            "mean": data.mean.cpu(),
            "num_classes": num_classes,
            "classes": data.classes,
            "history": rows,
            "precision": precision_name(step.bf16),
        },
        path,
    )
