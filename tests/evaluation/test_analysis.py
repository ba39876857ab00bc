"""Tests for resnet_repro.evaluation.responses: which BN layers are the 3x3 layers' responses, their std
(Figure 7), from a checkpoint and through the CLI."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from resnet_repro.data import small
from resnet_repro.errors import ReproError
from resnet_repro.evaluation.evaluate import load_checkpoint
from resnet_repro.evaluation.responses import bn_after_3x3, layer_responses, responses_from_checkpoint
from resnet_repro.models import IMAGENET_BLOCKS, ResNet, build_model, parse_model_name
from resnet_repro.spec.build import build_spec
from resnet_repro.training.loop import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The workloads here are tiny: one intra-op thread costs little on an idle machine and avoids
    OpenMP oversubscription (10x slower) when other processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def expected_names(name):
    """The BN after every 3x3 conv, in forward order, written out from the architecture."""
    spec = parse_model_name(name)
    if spec.family == "cifar":
        n = (spec.depth - 2) // 6
        return ["bn1"] + [f"layer{s}.{b}.bn{k}" for s in (1, 2, 3) for b in range(n) for k in (1, 2)]
    blocks = IMAGENET_BLOCKS[spec.depth]
    bns = ("bn1", "bn2") if spec.depth < 50 else ("bn2",)  # basic block: two 3x3; bottleneck: the middle one
    return [f"layer{s + 1}.{b}.{k}" for s, count in enumerate(blocks) for b in range(count) for k in bns]


def bn_firing_order(model, size):
    """Names of all BN modules in the order their forward hooks fire."""
    fired = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: fired.append(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return fired


# ---------------------------------------------------------------- bn_after_3x3


@pytest.mark.parametrize(
    "name,count",
    [
        ("resnet20", 19),
        ("plain20", 19),
        ("resnet56", 55),
        ("resnet20-C", 19),
        ("resnet50", 16),
        ("resnet18", 16),
        ("plain34", 32),
    ],
)
def test_bn_after_3x3_counts_and_names(name, count):
    model = build_model(name)
    pairs = bn_after_3x3(model)
    names = [n for n, _ in pairs]
    assert len(pairs) == count
    assert names == expected_names(name)
    modules = dict(model.named_modules())
    for n, bn in pairs:
        assert modules[n] is bn and isinstance(bn, nn.BatchNorm2d)
        conv = modules[n[:-3] + "conv" + n[-1]]  # bnK follows convK
        assert conv.kernel_size == (3, 3) and conv.out_channels == bn.num_features
    # no projection-shortcut BN (after a 1x1) and, for ImageNet nets, not the BN after the 7x7 stem
    assert not any("downsample" in n for n in names)
    if parse_model_name(name).family == "imagenet":
        assert modules["conv1"].kernel_size == (7, 7) and "bn1" not in names


def test_bn_after_3x3_excludes_1x1_and_7x7_in_bottlenecks():
    model = build_model("resnet50")
    names = {n for n, _ in bn_after_3x3(model)}
    modules = dict(model.named_modules())
    bns = [n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 + 16 * 3 + 4  # stem, three per bottleneck, one per projection shortcut
    for n in bns:
        if n.endswith("bn2") and n != "bn2":
            assert n in names
        else:  # stem bn1 (7x7), bn1/bn3 (1x1) of every bottleneck, downsample.1 (1x1)
            assert n not in names


@pytest.mark.parametrize(
    "name,size", [("resnet20", 8), ("plain20", 8), ("resnet20-C", 8), ("resnet18", 32), ("resnet50", 32)]
)
def test_bn_after_3x3_is_in_forward_order(name, size):
    torch.manual_seed(0)
    model = build_model(name)
    names = [n for n, _ in bn_after_3x3(model)]
    fired = bn_firing_order(model, size)
    assert len(fired) == len(set(fired))  # every BN runs once
    assert [n for n in fired if n in set(names)] == names
    assert set(names) <= set(fired)


# ---------------------------------------------------------------- layer_responses


def randomised(name, seed=0):
    """A model whose BN layers have non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    model = build_model(name)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model


def direct_stds(model, images, mean, names, chunk=4, per_channel=False):
    """Collect each named BN's outputs with hooks, concatenate, take the population std (per_channel:
    each channel's, averaged over channels)."""
    modules = dict(model.named_modules())
    outs = {n: [] for n in names}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: outs[n].append(o.detach().clone())) for n in names]
    model.eval()
    with torch.no_grad():
        for x in images.split(chunk):
            model(x.float() / 255.0 - mean)
    for h in handles:
        h.remove()
    if per_channel:
        return [torch.cat(outs[n]).std(dim=(0, 2, 3), unbiased=False).mean().item() for n in names]
    return [torch.cat(outs[n]).std(unbiased=False).item() for n in names]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (11, 3, 16, 16), dtype=torch.uint8, generator=g)
    return x, small.pixel_mean(x)


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_layer_responses_equal_direct_computation(images, name):
    x, mean = images
    model = randomised(name)
    names = [n for n, _ in bn_after_3x3(model)]
    want = direct_stds(model, x, mean, names)
    model.train()  # layer_responses must evaluate in eval mode (running statistics), whatever the mode
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rows = layer_responses(model, x, mean, CPU)
    assert not model.training
    for k, v in model.state_dict().items():  # running statistics untouched
        assert torch.equal(v, buffers[k]), k
    assert [r["layer"] for r in rows] == list(range(1, 20))
    assert [r["module"] for r in rows] == names
    got = [r["std"] for r in rows]
    assert got == pytest.approx(want, rel=1e-5)
    assert min(got) > 0 and max(got) / min(got) > 1.5  # varied, so the comparison is not vacuous
    want_pc = direct_stds(model, x, mean, names, per_channel=True)
    assert [r["std_per_channel"] for r in rows] == pytest.approx(want_pc, rel=1e-5)
    # no hook is left behind
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_responses_invariant_to_batch_size(images):
    x, mean = images
    model = randomised("resnet20", seed=3)
    whole = [r["std"] for r in layer_responses(model, x, mean, CPU)]
    for bs in (1, 4):  # 11 images: uneven last batch
        assert [r["std"] for r in layer_responses(model, x, mean, CPU, batch_size=bs)] == pytest.approx(whole, rel=1e-5)


def test_layer_responses_depend_on_the_images(images):
    x, mean = images
    model = randomised("resnet20")
    a = [r["std"] for r in layer_responses(model, x, mean, CPU)]
    b = [r["std"] for r in layer_responses(model, x[:3], mean, CPU)]
    c = [r["std"] for r in layer_responses(model, x, mean + 0.1, CPU)]
    assert a != pytest.approx(b, rel=1e-3) and a != pytest.approx(c, rel=1e-3)
    # a zoom on the first layer: population std over every example, channel and position
    want = direct_stds(model, x[:3], mean, ["bn1"])[0]
    assert b[0] == pytest.approx(want, rel=1e-5)


class HandMade(nn.Module):
    """A 3x3 conv (unused) and an identity BN (eval mode: zero mean, unit variance, eps 0) through
    which a given tensor passes, a batch at a time: the BN output is exactly that tensor."""

    def __init__(self, t):
        super().__init__()
        self.conv = nn.Conv2d(3, t.shape[1], 3)
        self.bn = nn.BatchNorm2d(t.shape[1], eps=0.0)
        self.t, self.pos = t, 0

    def forward(self, x):
        out = self.bn(self.t[self.pos : self.pos + len(x)])
        self.pos += len(x)
        return out


def test_std_per_channel_against_torch():
    """Channels with different means and spreads: `std` pools all N*H*W*C values (the channel means'
    spread adds to it), `std_per_channel` averages each channel's own std over N*H*W."""
    g = torch.Generator().manual_seed(11)
    mu, sd = torch.tensor([-3.0, 0.0, 1.0, 10.0]), torch.tensor([0.5, 1.0, 2.0, 4.0])
    t = torch.randn(7, 4, 5, 3, generator=g) * sd[:, None, None] + mu[:, None, None]
    want_pooled = t.std(unbiased=False).item()
    want_per_channel = t.std(dim=(0, 2, 3), unbiased=False).mean().item()
    assert want_pooled > 2 * want_per_channel  # the two measures really differ here
    x = torch.zeros(7, 3, 4, 4, dtype=torch.uint8)
    for bs in (500, 3):  # one batch, and uneven batches summed
        rows = layer_responses(HandMade(t), x, torch.zeros(3, 4, 4), CPU, batch_size=bs)
        assert [r["module"] for r in rows] == ["bn"]
        assert rows[0]["std"] == pytest.approx(want_pooled, rel=1e-6)
        assert rows[0]["std_per_channel"] == pytest.approx(want_per_channel, rel=1e-6)


# ---------------------------------------------------------------- responses_from_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cpu_kind):
    out = tmp_path_factory.mktemp("digits-run")
    spec = build_spec(
        None,
        [
            {
                "model": "resnet20",
                "data": {"kind": "digits"},
                "batch_size": 32,
                "max_iters": 10,
                "log_every": 10,
                "checkpoint_every": 10,
                "schedule": {"kind": "multistep", "milestones": [20]},
            }
        ],
    )
    train(spec, out, log=lambda msg: None)
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def imagenet_checkpoint(checkpoint, tmp_path_factory):
    """An ImageNet-family checkpoint (resnet18 on an image folder), derived from the trained one."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    root = tmp_path_factory.mktemp("no-data") / "folder"  # never read: the refusal comes first
    ckpt["spec"] = build_spec(
        None, [{"model": "resnet18", "data": {"kind": "imagefolder", "root": str(root), "crop": 16, "test_size": 20}}]
    )
    ckpt["model"] = ResNet(parse_model_name("resnet18"), 10).state_dict()
    ckpt["mean"] = torch.zeros(3, 16, 16)
    path = root.parent / "checkpoint.pt"
    torch.save(ckpt, path)
    return path


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_responses_from_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "figures" / "responses.csv"  # parent directory does not exist yet
    rows = responses_from_checkpoint(checkpoint, out, device="cpu")
    fields, csv_rows = read_csv(out)
    assert fields == ["model", "layer", "module", "std", "std_per_channel", "precision"]
    assert len(csv_rows) == len(rows) == 19
    assert {r["precision"] for r in csv_rows} == {"fp32"}  # fp32 unless asked, on every kind of CPU
    ckpt, model = load_checkpoint(checkpoint)
    names = [n for n, _ in bn_after_3x3(model)]
    assert [r["model"] for r in csv_rows] == ["resnet20"] * 19
    assert [int(r["layer"]) for r in csv_rows] == list(range(1, 20))
    assert [r["module"] for r in csv_rows] == names
    stds = [float(r["std"]) for r in csv_rows]
    assert stds == pytest.approx([r["std"] for r in rows], rel=1e-12)
    # the std over the digits test split, with the checkpoint's mean
    test_x = small.load_small("digits").test_x
    assert len(test_x) == 450
    assert stds == pytest.approx(direct_stds(model, test_x, ckpt["mean"], names, chunk=500), rel=1e-5)
    per_channel = [float(r["std_per_channel"]) for r in csv_rows]
    assert per_channel == pytest.approx([r["std_per_channel"] for r in rows], rel=1e-12)
    assert per_channel == pytest.approx(
        direct_stds(model, test_x, ckpt["mean"], names, chunk=500, per_channel=True), rel=1e-5
    )


def test_responses_from_checkpoint_max_images(checkpoint, tmp_path):
    full = [r["std"] for r in responses_from_checkpoint(checkpoint, tmp_path / "a.csv", device="cpu")]
    part = [r["std"] for r in responses_from_checkpoint(checkpoint, tmp_path / "b.csv", device="cpu", max_images=40)]
    ckpt, model = load_checkpoint(checkpoint)
    want = [r["std"] for r in layer_responses(model, small.load_small("digits").test_x[:40], ckpt["mean"], CPU)]
    assert part == pytest.approx(want, rel=1e-6)
    assert part != pytest.approx(full, rel=1e-4)
    assert len(read_csv(tmp_path / "b.csv")[1]) == 19


def test_responses_refuse_imagenet_checkpoint(imagenet_checkpoint, tmp_path):
    with pytest.raises(ReproError, match="resnet18 is an ImageNet model"):
        responses_from_checkpoint(imagenet_checkpoint, tmp_path / "r.csv", device="cpu")
    assert not (tmp_path / "r.csv").exists()
    with pytest.raises(ReproError, match="does not exist"):
        responses_from_checkpoint(tmp_path / "missing.pt", tmp_path / "r.csv", device="cpu")


def test_cli_responses(checkpoint, tmp_path):
    out = tmp_path / "sub" / "responses.csv"
    proc = run_cli("responses", checkpoint, "--out", out, "--device", "cpu", "--max-images", 100)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"19 layers written to {out}\n"
    fields, rows = read_csv(out)
    assert fields == ["model", "layer", "module", "std", "std_per_channel", "precision"] and len(rows) == 19
    want = responses_from_checkpoint(checkpoint, tmp_path / "in-process.csv", device="cpu", max_images=100)
    assert [r["module"] for r in rows] == [r["module"] for r in want]
    assert [float(r["std"]) for r in rows] == pytest.approx([r["std"] for r in want], rel=1e-6)


def test_cli_responses_error(imagenet_checkpoint, tmp_path):
    proc = run_cli("responses", imagenet_checkpoint, "--out", tmp_path / "r.csv", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("resnet-repro: error:") and "ImageNet model" in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n")
    assert not (tmp_path / "r.csv").exists()


def test_bf16_responses_only_when_asked(checkpoint, tmp_path):
    """--precision bf16 runs the forward pass under bf16 autocast, says so in the CSV, and stays within
    bf16's rounding (8 significant bits: a few tenths of a percent per layer) of the fp32 stds."""
    fp32 = responses_from_checkpoint(checkpoint, tmp_path / "fp32.csv", device="cpu", max_images=100)
    bf16 = responses_from_checkpoint(checkpoint, tmp_path / "bf16.csv", device="cpu", max_images=100, precision="bf16")
    assert {r["precision"] for r in read_csv(tmp_path / "bf16.csv")[1]} == {"bf16"}
    a, b = [r["std"] for r in fp32], [r["std"] for r in bf16]
    assert b == pytest.approx(a, rel=0.05)
    assert b != pytest.approx(a, rel=1e-6)  # bf16 really was used
