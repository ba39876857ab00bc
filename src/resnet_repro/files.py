"""Writes that never leave a half-written file (write beside the target, then rename), and the one
reader of the project's .pt files."""

import json
import os
import tempfile
from pathlib import Path

from resnet_repro.errors import ReproError


def _umask():
    """The process's umask: read from /proc on Linux (no side effect on other threads); elsewhere
    os.umask, which can only be read by setting it, put straight back."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def write_with(path, write):
    """Call write(binary file) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open(path, "w") would (0644 under
        # umask 022), so colleagues on a shared file system can read results
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj, path):
    import torch  # only here: the rest of this module serves commands that do not need torch

    write_with(path, lambda f: torch.save(obj, f))


def load_torch(path, what="checkpoint"):
    """A .pt file the project wrote (checkpoint.pt, model.pt), read as data: weights_only=True
    unpickles tensors and plain containers and numbers only, so a crafted file cannot run code.
    Every failure is a ReproError of one line."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ReproError(f"{what} {path} does not exist") from None
    except pickle.UnpicklingError as e:  # torch's message runs to many lines; keep the one that says why
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        why = next((l for l in lines if "GLOBAL" in l), None)
        if why:  # a pickled callable or class: what a crafted file uses to run code
            raise ReproError(
                f"refused to load {what} {path}: it holds code, not only tensors and plain data "
                f"({why.rstrip('.')}); a checkpoint written by `resnet-repro train` never does"
            ) from None
        why = next((l for l in lines if "Unsupported" in l or "invalid" in l.lower()), lines[-1] if lines else "")
        raise ReproError(f"cannot read {what} {path}: not a PyTorch file ({why.rstrip('.')})") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ReproError(f"cannot read {what} {path}: {e.__class__.__name__}: {first}") from None


def write_text(path, text):
    write_with(path, lambda f: f.write(text.encode()))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
