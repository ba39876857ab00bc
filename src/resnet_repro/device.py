"""Device and precision choices, in one place so the CPU and CUDA paths differ only here."""
import contextlib

import torch

from .errors import ReproError


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReproError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def use_bf16(precision, device):
    """auto: bf16 autocast on CUDA (as the paper's fp32 numbers are insensitive to it), fp32 on CPU."""
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def use_channels_last(setting, device):
    return device.type == "cuda" if setting == "auto" else bool(setting)


def autocast(device, bf16):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format
