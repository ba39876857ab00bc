"""The models held against numbers nobody here wrote: the paper's tables and torchvision."""

import json
import subprocess
import sys
from importlib import resources

import ghost_bn
import pytest
import torch
import torchvision
import yaml
from torch import nn

from resnet_repro.errors import ReproError
from resnet_repro.models import BatchNorm2d, ZeroPadShortcut, build_model, count_gflops, count_params, parse_model_name

REFERENCE = yaml.safe_load(resources.files("resnet_repro.paper").joinpath("reference.yaml").read_text())


def test_reference_is_the_papers_file():
    with open(__file__.rsplit("/tests/", 1)[0] + "/src/resnet_repro/paper/reference.yaml") as f:
        assert yaml.safe_load(f) == REFERENCE
    assert REFERENCE["table6_cifar10"][-1]["model"] == "resnet1202"


@pytest.mark.parametrize(
    "row", [r for r in REFERENCE["table6_cifar10"] if not r.get("literature")], ids=lambda r: r["model"]
)
def test_cifar_params_match_table6(row):
    params = count_params(build_model(row["model"])) / 1e6
    digits = len(str(row["params_m"]).split(".")[1])
    assert round(params, digits) == row["params_m"]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_and_option_a_have_equal_params(depth):
    assert count_params(build_model(f"plain{depth}")) == count_params(build_model(f"resnet{depth}"))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_option_b_params_equal_torchvision(depth):
    ours = count_params(build_model(f"resnet{depth}"))
    theirs = count_params(getattr(torchvision.models, f"resnet{depth}")())
    assert ours == theirs


@pytest.mark.parametrize("name,tv", [("resnet50-v1.5", "resnet50"), ("resnet18", "resnet18")])
def test_torchvision_weights_load_and_give_same_logits(name, tv):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, tv)().eval()
    for m in theirs.modules():  # non-trivial BN statistics so a wrong mapping cannot hide
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = build_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_paper_bottleneck_differs_from_v15_only_in_stride_placement():
    a, b = build_model("resnet50"), build_model("resnet50-v1.5")
    assert a.layer2[0].conv1.stride == (2, 2) and a.layer2[0].conv2.stride == (1, 1)
    assert b.layer2[0].conv1.stride == (1, 1) and b.layer2[0].conv2.stride == (2, 2)


@pytest.mark.parametrize(
    "row", REFERENCE["table1_imagenet_architectures"] + [{"model": "plain34", "gflops": 3.6}], ids=lambda r: r["model"]
)
def test_gflops_within_3_percent_of_table1(row):
    model = build_model(row["model"])
    gflops = count_gflops(model, 224)
    assert abs(gflops - row["gflops"]) / row["gflops"] < 0.03, gflops


def test_gflops_come_from_the_flop_counter_and_scale_with_input():
    model = build_model("resnet20")
    assert count_gflops(model, 64) == pytest.approx(4 * count_gflops(model, 32), rel=0.01)


@pytest.mark.parametrize(
    "name,family,depth,residual,shortcut",
    [
        ("resnet20", "cifar", 20, True, "A"),
        ("plain56", "cifar", 56, False, "A"),
        ("resnet1202", "cifar", 1202, True, "A"),
        ("resnet110", "cifar", 110, True, "A"),
        ("cifar-resnet50", "cifar", 50, True, "A"),
        ("cifar-plain152", "cifar", 152, False, "A"),
        ("resnet50", "imagenet", 50, True, "B"),
        ("resnet152", "imagenet", 152, True, "B"),
        ("resnet34-A", "imagenet", 34, True, "A"),
        ("resnet34-C", "imagenet", 34, True, "C"),
        ("plain18", "imagenet", 18, False, "B"),
        ("resnet20-B", "cifar", 20, True, "B"),
    ],
)
def test_names(name, family, depth, residual, shortcut):
    s = parse_model_name(name)
    assert (s.family, s.depth, s.residual, s.shortcut) == (family, depth, residual, shortcut)
    assert parse_model_name(s.name) == s  # the canonical name round-trips


@pytest.mark.parametrize(
    "name,words",
    [
        ("resnet21", ["6n+2", "resnet20"]),
        ("plain34-A", ["plain nets have no shortcuts"]),
        ("resnet201", ["6n+2"]),
        ("imagenet-resnet20", ["18, 34, 50, 101, 152"]),
        ("resnet34-v1.5", ["bottleneck"]),
        ("vgg16", ["valid names"]),
        ("resnet20-D", ["valid names"]),
    ],
)
def test_bad_names_give_one_line_errors(name, words):
    with pytest.raises(ReproError) as e:
        parse_model_name(name)
    msg = str(e.value)
    assert "\n" not in msg and name in msg
    for w in words:
        assert w in msg


def test_cifar_structure():
    m = build_model("resnet56")
    assert [len(getattr(m, f"layer{i}")) for i in (1, 2, 3)] == [9, 9, 9]
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(convs) == 55 == len(bns)  # 6n+1 convs plus the fc: 56 weighted layers, BN after every conv
    assert all(c.kernel_size == (3, 3) for c in convs)
    widths = sorted({c.out_channels for c in convs})
    assert widths == [16, 32, 64]
    assert isinstance(m.layer2[0].downsample, ZeroPadShortcut) and m.layer2[1].downsample is None
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_shortcut_options():
    a, b, c = (build_model(f"resnet34-{o}") for o in "ABC")
    projections = lambda m: sum(isinstance(x, nn.Sequential) and len(x) == 2 for x in m.modules())
    assert projections(a) == 0
    assert projections(b) == 3  # only where dimensions change: first block of conv3_x, conv4_x, conv5_x
    assert projections(c) == 16  # every block
    plain = build_model("plain34")
    assert all(blk.downsample is None and not blk.residual for l in (plain.layer1, plain.layer4) for blk in l)


def test_option_a_zero_pads_and_subsamples():
    sc = ZeroPadShortcut(2, 3)
    x = torch.randn(1, 2, 4, 4)
    y = sc(x)
    assert y.shape == (1, 5, 2, 2)
    torch.testing.assert_close(y[:, :2], x[:, :, ::2, ::2])
    assert y[:, 2:].abs().sum() == 0


def test_relu_after_addition_and_plain_forward():
    torch.manual_seed(0)
    res, plain = build_model("resnet20").eval(), build_model("plain20").eval()
    block = res.layer1[0]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        inner = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        torch.testing.assert_close(block(x), torch.relu(inner + x))
        pblock = plain.layer1[0]
        inner = pblock.bn2(pblock.conv2(torch.relu(pblock.bn1(pblock.conv1(x)))))
        torch.testing.assert_close(pblock(x), torch.relu(inner))


def test_he_initialisation():
    torch.manual_seed(0)
    m = build_model("resnet1202")
    conv = m.layer3[5].conv1  # 64 -> 64, 3x3: fan_out = 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))


def test_fully_convolutional_on_any_size():
    m = build_model("resnet18").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 97, 131)).shape == (1, 1000)


def test_models_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "resnet_repro", "models", "--json", "resnet20", "resnet50", "plain34"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"resnet20", "resnet50", "plain34"}
    assert rows["resnet20"]["params"] == count_params(build_model("resnet20"))
    assert abs(rows["resnet50"]["gflops"] - 3.8) / 3.8 < 0.03
    assert rows["plain34"]["gflops"] == pytest.approx(3.6, rel=0.03)


def test_models_cli_bad_name():
    r = subprocess.run([sys.executable, "-m", "resnet_repro", "models", "resnet21"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-repro: error: unknown model 'resnet21'")


def test_models_logged_before_the_move_find_their_model_spec():
    """MLflow models logged before the move pickled ResNet.spec as resnet_repro.names.ModelSpec."""
    import pickle

    from resnet_repro.paper.names import ModelSpec

    assert pickle.loads(b"cresnet_repro.names\nModelSpec\n.") is ModelSpec


class VectorisedGhostBatchNorm(BatchNorm2d):
    """benchmarks/ghost_bn.py's candidate for the model's ghost BatchNorm (a loop over the groups)."""

    forward = ghost_bn.vectorised_forward


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_vectorised_ghost_batchnorm_equals_one_batchnorm_per_group(channels_last, momentum):
    """Forward, backward (input, weight and bias) and running statistics over three steps: the candidate
    against the model's loop, each normalising groups of 8 of a batch of 32 and following the first."""
    torch.manual_seed(0)
    ours, loop = VectorisedGhostBatchNorm(6, momentum=momentum), BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-0.5, 0.5)
    loop.load_state_dict(ours.state_dict())
    ours.group = loop.group = 8
    for step in range(3):
        x = torch.randn(32, 6, 5, 7) * (step + 1) + step
        x = x.to(memory_format=torch.channels_last) if channels_last else x
        grad = torch.randn(32, 6, 5, 7)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(a), loop(b)
        (ya * grad).sum().backward()
        (yb * grad).sum().backward()
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, loop.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, loop.bias.grad, rtol=1e-4, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(loop, name), rtol=1e-5, atol=1e-6)
    assert ya.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_vectorised_ghost_batchnorm_keeps_bf16_and_matches():
    ours, loop = VectorisedGhostBatchNorm(4), BatchNorm2d(4)
    ours.group = loop.group = 4
    x = torch.randn(16, 4, 3, 3).bfloat16()
    ya, yb = ours(x), loop(x)
    assert ya.dtype == torch.bfloat16
    torch.testing.assert_close(ya.float(), yb.float(), rtol=2e-2, atol=2e-2)  # bf16's rounding
    torch.testing.assert_close(ours.running_var, loop.running_var, rtol=1e-4, atol=1e-5)
