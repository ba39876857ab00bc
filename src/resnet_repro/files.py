"""Writes that never leave a half-written file: write beside the target, then rename."""
import json
import os
import tempfile
from pathlib import Path


def write_with(path, write):
    """Call write(binary file) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_text(path, text):
    write_with(path, lambda f: f.write(text.encode()))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
