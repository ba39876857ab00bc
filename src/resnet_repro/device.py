"""Device and precision choices, in one place so the CPU and CUDA paths differ only here.

The `auto` settings were chosen by measurement (benchmarks/train_throughput.py, benchmarks/README.md):
- precision: bf16 autocast on CUDA GPUs with native bf16 (compute capability 8.0+) and on CPUs with
  native bf16 dot products (AVX512-BF16 or AMX); fp32 elsewhere, because without those instructions
  oneDNN emulates bf16 and a ResNet step is many times slower than in fp32.
- channels_last: on CUDA (cuDNN's NHWC kernels, tensor cores) and on CPU (oneDNN's convolutions
  work in a blocked/NHWC layout; NCHW costs a reorder before and after every convolution).
- compile: torch.compile only on CUDA, and only for long runs; on CPU it did not pay (see `use_compile`).
- TF32: off on CUDA (`configure`), so that "fp32" means IEEE fp32; bf16 autocast is the speed path.
"""

import contextlib
import functools
import os
import resource
import sys

import torch

from resnet_repro.errors import ReproError


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReproError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16():
    """True when the CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16), the case
    in which oneDNN's bf16 convolutions beat fp32. AVX512 alone is not enough (bf16 is then
    converted to fp32 and back in software)."""
    try:
        caps = torch.cpu.get_capabilities()
    except AttributeError:  # older torch: ask the private probes, else assume no
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(probe and probe())
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def cuda_has_native_bf16(device):
    """Ampere (8.0) and later: earlier GPUs emulate bf16, slower than fp32."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def use_bf16(precision, device):
    """auto: bf16 autocast where the hardware has native bf16 (see the module docstring), else fp32.
    The paper's fp32 numbers are insensitive to bf16 autocast (weights, BN statistics and the
    optimizer stay fp32; only convolution and matmul inputs are rounded)."""
    if precision == "auto":
        if device.type == "cuda":
            return cuda_has_native_bf16(device)
        return device.type == "cpu" and cpu_has_native_bf16()
    return precision == "bf16"


def precision_name(bf16):
    """What a run records as its precision: the arithmetic it actually used, not the setting."""
    return "bf16" if bf16 else "fp32"


def use_channels_last(setting, device):
    """auto: on for CUDA and CPU (measured faster on both; see the module docstring)."""
    return device.type in ("cuda", "cpu") if setting == "auto" else bool(setting)


def compiler_available(device):
    """torch.compile needs Triton on CUDA and a C++ compiler on CPU; without them it fails at the
    first call, so check before asking for it."""
    if sys.platform == "win32":
        return False
    try:
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            return has_triton()
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
        return True
    except Exception:
        return False


COMPILE_MIN_ITERS = 2000  # below this, compiling (about a minute; several on a CPU) costs more than it saves


def use_compile(setting, device, max_iters=None):
    """auto: torch.compile on CUDA for runs of COMPILE_MIN_ITERS iterations or more. Not on CPU: on a
    2-core AVX2 machine it made the ResNet-56 step only about 3% faster than eager channels_last
    (1.19 s against 1.23 s; benchmarks/README.md), for a compile of tens of seconds to minutes per
    process; `true` still compiles there. Where no compiler exists it falls back to eager (with a
    warning if `true` asked for it)."""
    if setting == "auto":
        want = device.type == "cuda" and (max_iters is None or max_iters >= COMPILE_MIN_ITERS)
    else:
        want = bool(setting)
    if want and not compiler_available(device):
        if setting is True:
            print(
                f"resnet-repro: warning: compile: true but torch.compile has no compiler for {device.type} "
                f"here; running eager",
                file=sys.stderr,
            )
        return False
    return want


def set_threads(threads):
    """CPU threads for PyTorch in this process: `threads` is the job's CPU count, which torchrun's
    processes on one node share (LOCAL_WORLD_SIZE of them)."""
    torch.set_num_threads(max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def configure(device):
    """Process-wide settings for training on `device`. cuDNN benchmark mode: the input shape is
    fixed, so timing cuDNN's algorithms once and keeping the fastest pays (the same convolution,
    another algorithm)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # TF32 off, set here rather than left to PyTorch's defaults (cuDNN convolutions TF32, matmuls not):
        # an op outside bf16 autocast, and every op of a `precision: fp32` run or an fp32 evaluation, is
        # then IEEE fp32, as its recorded name says (metrics.json `tf32`, see tf32_in_use)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def tf32_in_use(device):
    """What a run records as `tf32`: whether fp32 convolutions or matmuls may round to TF32 here (None
    on a CPU, where there is no TF32)."""
    if device.type != "cuda":
        return None
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def autocast(device, bf16, cache=True):
    """bf16 autocast (or nothing). cache=False while a CUDA graph is recorded (the cast weights
    must be recomputed at every replay, not kept from the recording)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def make_sgd(params, device, **kw):
    """The trainer's SGD: on CUDA the fused kernel (one launch for every parameter's update, instead
    of a few per parameter group of tensors); elsewhere PyTorch's default implementation."""
    if device.type == "cuda":
        kw["fused"] = True
    return torch.optim.SGD(params, **kw)


CUDA_GRAPH_FAMILIES = ("cifar",)


def use_cuda_graph(device, family, world_size=1):
    """Record each training step as a CUDA graph and replay it: on CUDA, in one process, for the
    small CIFAR nets, whose step is a thousand or so short kernels that the CPU cannot launch as
    fast as the GPU runs them (measured: benchmarks/README.md). Not with DDP (its all-reduces are
    launched from hooks during backward) and not for the ImageNet nets (their kernels are long)."""
    return device.type == "cuda" and world_size == 1 and family in CUDA_GRAPH_FAMILIES


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device):
    """Peak memory of the training: allocated device memory on CUDA (since reset_peak_memory), the
    process's maximum resident set size on CPU (over the whole process, which is the training's
    own in a `resnet-repro train` job)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def describe(device):
    """One line naming the hardware, for benchmark and estimate output."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    name = name or (torch.cpu.get_capabilities().get("cpu_name", "") if hasattr(torch.cpu, "get_capabilities") else "")
    return f"cpu ({name or 'unknown'}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"
