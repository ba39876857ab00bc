"""Tests for resnet_repro.evaluation.evaluate: error rates, the ImageNet test views (centre crop, 10-crop,
fully-convolutional multi-scale), end-to-end checkpoint evaluation, ensembles and the CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN_PRECISION
from torchvision.datasets import ImageFolder
from torchvision.transforms import TenCrop
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data import digits, small, stream
from resnet_repro.errors import ReproError
from resnet_repro.evaluation.evaluate import (
    ensemble,
    error_rates,
    evaluate_checkpoint,
    load_checkpoint,
    predict_tensor,
    predict_view,
)
from resnet_repro.models import ResNet, parse_model_name
from resnet_repro.spec.build import build_spec
from resnet_repro.training.loop import train

CPU = torch.device("cpu")
CROP, TEST_SIZE, SCALES = 16, 20, (16, 24)


def run_cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # see one_thread
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("resnet-repro: error:"), proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The workloads here are tiny: one intra-op thread costs little on an idle machine and avoids
    OpenMP oversubscription (10x slower) when other processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The digits as a 24x24 ImageFolder, pruned to 12 training and 3 validation images per class
    so that training and every view stay fast."""
    root = digits.make_digits_imagefolder(tmp_path_factory.mktemp("digits24") / "folder", size=24)
    for split, keep in (("train", 12), ("val", 3)):
        for class_dir in (root / split).iterdir():
            for f in sorted(class_dir.iterdir())[keep:]:
                f.unlink()
    return root


@pytest.fixture(scope="module")
def val_ds(folder):
    ds = ImageFolder(str(folder / "val"))
    assert len(ds) == 30 and len(ds.classes) == 10
    return ds


@pytest.fixture(scope="module")
def subset(val_ds):
    # one image from each of six classes, not in data-set order
    return torch.utils.data.Subset(val_ds, [25, 0, 4, 13, 9, 20])


@pytest.fixture(scope="module")
def model18():
    torch.manual_seed(0)
    model = ResNet(parse_model_name("resnet18"), num_classes=10).eval()
    with torch.no_grad():  # logits spread over ~8 units: a softmax far from linear, never below the 1e-12 clamp
        model.fc.weight.mul_(40.0)
    return model


def zero_mean():
    return torch.zeros(3, CROP, CROP)


def image_tensor(ds, i):
    img, _ = ds[i]
    return TF.pil_to_tensor(img.convert("RGB"))  # uint8 (3, H, W)


def logits(model, x_uint8, mean):
    with torch.no_grad():
        return model(x_uint8.float() / 255.0 - mean)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, cpu_kind):
    out = tmp_path_factory.mktemp("cifar-run")
    spec = build_spec(
        None,
        [
            {
                "model": "resnet20",
                "data": {"kind": "digits"},
                "batch_size": 32,
                "max_iters": 30,
                "log_every": 10,
                "checkpoint_every": 10,
                "schedule": {"kind": "multistep", "milestones": [20]},
            }
        ],
    )
    metrics = train(spec, out, log=lambda msg: None)
    return out / "checkpoint.pt", metrics


@pytest.fixture(scope="module")
def imnet_run(tmp_path_factory, folder, cpu_kind):
    out = tmp_path_factory.mktemp("imnet-run")
    spec = build_spec(
        None,
        [
            {
                "model": "resnet18",
                "data": {
                    "kind": "imagefolder",
                    "root": str(folder),
                    "scale": [24, 32],
                    "crop": CROP,
                    "test_size": TEST_SIZE,
                    "workers": 0,
                    "mean_images": 200,
                },
                "batch_size": 32,
                "max_iters": 6,
                "log_every": 3,
                "checkpoint_every": 3,
                "eval_batch_size": 64,
            }
        ],
    )
    metrics = train(spec, out, log=lambda msg: None)
    return out / "checkpoint.pt", metrics


@pytest.fixture(scope="module")
def cifar_eval(cifar_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("cifar-eval") / "not" / "yet" / "there"  # evaluate must create it
    return out, evaluate_checkpoint(cifar_run[0], out)


@pytest.fixture(scope="module")
def imnet_eval(imnet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("imnet-eval")
    return out, evaluate_checkpoint(imnet_run[0], out, scales=SCALES, workers=0)


# ---------------------------------------------------------------- error_rates


def test_error_rates_known_ranks():
    # 4 examples, 6 classes; the label sits at rank 0, 2, 5 and 4 of its row
    scores = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 0: rank 0 -> top-1 and top-5 hit
            [9.0, 7.0, 1.0, 8.0, 2.0, 3.0],  # label 1: rank 2 -> top-5 hit only
            [1.0, 2.0, 9.0, 8.0, 7.0, 6.0],  # label 0: rank 5 -> miss
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        ]
    )  # label 4: rank 4 (the 5th) -> top-5 hit
    labels = torch.tensor([0, 1, 0, 4])
    r = error_rates(scores, labels)
    assert r["n"] == 4
    assert r["top1_error"] == pytest.approx(75.0)
    assert r["top5_error"] == pytest.approx(25.0)
    # the same with numpy inputs
    r2 = error_rates(scores.numpy(), labels.numpy())
    assert r2 == pytest.approx(r)


def test_error_rates_all_right_and_all_wrong():
    scores = torch.eye(7) * 5
    r = error_rates(scores, torch.arange(7))
    assert (r["top1_error"], r["top5_error"], r["n"]) == (0.0, 0.0, 7)
    # label is always the lowest score: wrong even at top-5 (7 classes > 5)
    r = error_rates(-scores, torch.arange(7))
    assert r["top1_error"] == pytest.approx(100.0) and r["top5_error"] == pytest.approx(100.0)


def test_error_rates_fewer_than_five_classes():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    r = error_rates(scores, torch.tensor([2, 0, 0]))
    assert r["top1_error"] == pytest.approx(200.0 / 3)
    assert r["top5_error"] == 0.0  # every class is in the "top 5" of 3 classes


def test_error_rates_match_a_direct_count():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(500, 20, generator=g)
    labels = torch.randint(0, 20, (500,), generator=g)
    order = scores.argsort(1, descending=True)
    rank = (order == labels[:, None]).int().argmax(1)
    r = error_rates(scores, labels)
    assert r["top1_error"] == pytest.approx(100.0 * (rank > 0).float().mean().item())
    assert r["top5_error"] == pytest.approx(100.0 * (rank > 4).float().mean().item())
    assert 0 < r["top5_error"] < r["top1_error"] < 100


# ---------------------------------------------------------------- predict_view


@pytest.mark.parametrize("test_size", [24, TEST_SIZE])
def test_center_view_equals_model_on_centre_crop(model18, subset, test_size):
    g = torch.Generator().manual_seed(test_size)
    mean = torch.rand(3, CROP, CROP, generator=g) * 0.5  # a real per-pixel mean this time
    got = predict_view(model18, subset, "center", mean, CPU, batch_size=4, workers=0, test_size=test_size, crop=CROP)
    assert got.shape == (len(subset), 10)
    for row in range(len(subset)):
        x = image_tensor(subset, row)
        assert x.shape == (3, 24, 24)
        if test_size != 24:
            x = TF.resize(x, [test_size, test_size], antialias=True)
        t = (test_size - CROP) // 2  # even margins: the centre is exact
        want = logits(model18, x[None, :, t : t + CROP, t : t + CROP], mean)[0]
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-4)


def test_center_view_independent_of_batch_size(model18, subset):
    a = predict_view(
        model18, subset, "center", zero_mean(), CPU, batch_size=1, workers=0, test_size=TEST_SIZE, crop=CROP
    )
    b = predict_view(
        model18, subset, "center", zero_mean(), CPU, batch_size=64, workers=0, test_size=TEST_SIZE, crop=CROP
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def ten_crops_by_hand(x, crop):
    """4 corners + centre of x and of its horizontal flip (any order)."""
    h, w = x.shape[-2:]
    t, l = (h - crop) // 2, (w - crop) // 2
    out = []
    for im in (x, x.flip(-1)):
        out += [
            im[:, :crop, :crop],
            im[:, :crop, w - crop :],
            im[:, h - crop :, :crop],
            im[:, h - crop :, w - crop :],
            im[:, t : t + crop, l : l + crop],
        ]
    return out


def test_tencrop_view_is_log_mean_softmax_of_ten_crops(model18, subset):
    mean = zero_mean()
    # batch_size 20: two images (20 crops) a batch, so the batching of crops is exercised too
    got = predict_view(model18, subset, "tencrop", mean, CPU, batch_size=20, workers=0, test_size=TEST_SIZE, crop=CROP)
    assert got.shape == (len(subset), 10)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(len(subset)), rtol=0, atol=1e-5)
    for i in range(len(subset)):
        x = TF.resize(image_tensor(subset, i), [TEST_SIZE, TEST_SIZE], antialias=True)
        crops = torch.stack(TenCrop(CROP)(x))
        assert crops.shape == (10, 3, CROP, CROP)
        # TenCrop really is the 5 crops of the image and of its flip
        by_hand = torch.stack(ten_crops_by_hand(x, CROP))
        assert sorted(map(lambda c: c.numpy().tobytes(), crops)) == sorted(map(lambda c: c.numpy().tobytes(), by_hand))
        z = logits(model18, crops, mean)
        want = F.softmax(z, 1).mean(0).log()
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)
        # the test can tell the mean softmax from the softmax of the mean logit or of the centre crop
        assert (F.log_softmax(z.mean(0), 0) - want).abs().max() > 1e-3
        assert (F.log_softmax(z[4], 0) - want).abs().max() > 1e-3


def test_tencrop_view_with_batch_smaller_than_ten(model18, subset):
    a = predict_view(
        model18, subset, "tencrop", zero_mean(), CPU, batch_size=3, workers=0, test_size=TEST_SIZE, crop=CROP
    )
    b = predict_view(
        model18, subset, "tencrop", zero_mean(), CPU, batch_size=60, workers=0, test_size=TEST_SIZE, crop=CROP
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_multiscale_view_averages_scales_and_flips(model18, subset):
    mean = zero_mean()
    got = predict_view(model18, subset, "multiscale", mean, CPU, workers=0, scales=SCALES)
    assert got.shape == (len(subset), 10)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(len(subset)), rtol=0, atol=1e-5)
    for i in (0, 3):
        x = image_tensor(subset, i)
        per_scale = []
        for s in SCALES:
            xs = TF.resize(x, [s, s], antialias=True)  # square images: shorter side s is the whole s x s image
            both = torch.stack([xs, xs.flip(-1)])
            per_scale.append(F.softmax(logits(model18, both, torch.zeros(3, s, s)), 1))
        want = torch.stack(per_scale).mean((0, 1)).log()
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)
        # discriminating: without the flips, or with one scale only, the answer differs
        no_flip = torch.stack([p[0] for p in per_scale]).mean(0).log()
        assert (no_flip - want).abs().max() > 1e-3
        assert (per_scale[0].mean(0).log() - want).abs().max() > 1e-3


def test_multiscale_single_scale(model18, subset):
    got = predict_view(model18, subset, "multiscale", zero_mean(), CPU, workers=0, scales=(24,))
    x = image_tensor(subset, 1)  # already 24x24: no resize
    want = F.softmax(logits(model18, torch.stack([x, x.flip(-1)]), torch.zeros(3, 24, 24)), 1).mean(0).log()
    torch.testing.assert_close(got[1], want, rtol=1e-4, atol=1e-4)


def test_multiscale_without_flips(model18, subset):
    """flips=False (a model trained without mirrors): the mean softmax over scales of the image alone."""
    got = predict_view(model18, subset, "multiscale", zero_mean(), CPU, workers=0, scales=SCALES, flips=False)
    x = image_tensor(subset, 2)
    want = (
        torch.stack(
            [
                F.softmax(logits(model18, TF.resize(x, [s, s], antialias=True)[None], torch.zeros(3, s, s)), 1)[0]
                for s in SCALES
            ]
        )
        .mean(0)
        .log()
    )
    torch.testing.assert_close(got[2], want, rtol=1e-4, atol=1e-4)
    with_flips = predict_view(model18, subset, "multiscale", zero_mean(), CPU, workers=0, scales=SCALES)
    assert (with_flips[2] - want).abs().max() > 1e-3


def test_tencrop_without_flips_is_the_five_crops(model18, subset):
    """flips=False: the mean softmax of the 4 corner and the centre crops, no mirrored ones."""
    got = predict_view(
        model18,
        subset,
        "tencrop",
        zero_mean(),
        CPU,
        batch_size=20,
        workers=0,
        test_size=TEST_SIZE,
        crop=CROP,
        flips=False,
    )
    x = TF.resize(image_tensor(subset, 1), [TEST_SIZE, TEST_SIZE], antialias=True)
    five = torch.stack(ten_crops_by_hand(x, CROP)[:5])
    want = F.softmax(logits(model18, five, zero_mean()), 1).mean(0).log()
    torch.testing.assert_close(got[1], want, rtol=1e-4, atol=1e-4)


class Recorder(torch.nn.Module):
    """Stands in for a network: keeps every input batch it is given and returns constant logits."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return torch.zeros(len(x), 10)


def gradient_mean():
    """A crop-sized mean image with a left-to-right gradient and a different level per channel."""
    ramp = torch.linspace(0.0, 0.4, CROP)[None, None, :].expand(3, CROP, CROP)
    return (torch.tensor([0.2, 0.4, 0.6])[:, None, None] + ramp).contiguous()


def test_multiscale_subtracts_the_per_channel_mean_of_whole_images():
    """A whole, non-square image is not crop-sized: multiscale subtracts the mean image's per-channel
    mean at every pixel, not the mean image stretched (which would add its gradient to the input)."""
    from PIL import Image

    g = torch.Generator().manual_seed(5)
    img = Image.fromarray(
        torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8, generator=g).numpy()
    )  # 30 wide, 20 high
    mean = gradient_mean()
    model = Recorder()
    predict_view(model, [(img, 0)], "multiscale", mean, CPU, workers=0, scales=(16, 24), flips=False)
    assert len(model.inputs) == 2
    per_channel = mean.mean((1, 2))
    for s, x in zip((16, 24), model.inputs):
        whole = stream.eval_transform("full", scale=s)(img)
        assert whole.shape == (3, s, s * 3 // 2)  # the whole image, shorter side s
        torch.testing.assert_close(x[0], whole.float() / 255 - per_channel[:, None, None], rtol=0, atol=1e-6)


def test_crop_views_subtract_the_per_pixel_mean():
    """Centre crop and 10-crop inputs are crop-sized: they keep the per-pixel mean image."""
    from PIL import Image

    g = torch.Generator().manual_seed(6)
    img = Image.fromarray(torch.randint(0, 256, (TEST_SIZE, 25, 3), dtype=torch.uint8, generator=g).numpy())
    mean = gradient_mean()
    for view, tf in (
        ("center", stream.eval_transform("center", TEST_SIZE, CROP)),
        ("tencrop", stream.eval_transform("tencrop", TEST_SIZE, CROP)),
    ):
        model = Recorder()
        predict_view(model, [(img, 0)], view, mean, CPU, workers=0, test_size=TEST_SIZE, crop=CROP)
        crops = tf(img).reshape(-1, 3, CROP, CROP)  # (1 or 10, 3, CROP, CROP)
        torch.testing.assert_close(model.inputs[0], crops.float() / 255 - mean, rtol=0, atol=1e-6)


def test_predict_view_unknown_view(model18, subset):
    with pytest.raises(ReproError, match="unknown view 'single'"):
        predict_view(model18, subset, "single", zero_mean(), CPU, workers=0)


def test_predict_tensor_matches_model_and_batches(model18):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=g)
    mean = torch.rand(3, 16, 16, generator=g)
    model18.train()  # predict_tensor must switch to eval mode itself
    got = predict_tensor(model18, x, mean, CPU, batch_size=3)
    assert not model18.training
    torch.testing.assert_close(got, logits(model18, x, mean), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- evaluate_checkpoint


def test_cifar_checkpoint_default_view(cifar_run, cifar_eval, cpu_kind):
    ckpt, train_metrics = cifar_run
    out, metrics = cifar_eval
    assert out.is_dir()
    assert metrics["model"] == "resnet20" and metrics["iteration"] == 30 and metrics["split"] == "test"
    assert list(metrics["views"]) == ["single"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "scores-single.npz"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    v = metrics["views"]["single"]
    td = small.load_small("digits")
    z = np.load(out / "scores-single.npz")
    np.testing.assert_array_equal(z["labels"], td.test_y.numpy())
    assert z["scores"].shape == (len(td.test_y), 10) and v["n"] == len(td.test_y) == 450
    assert v == pytest.approx(error_rates(torch.from_numpy(z["scores"]), td.test_y))
    assert 0 <= v["top5_error"] <= v["top1_error"] <= 100
    # `precision: auto` trained as this kind of CPU does; evaluation (and training's test curve) in fp32
    assert train_metrics["precision"] == TRAIN_PRECISION[cpu_kind] and train_metrics["eval_precision"] == "fp32"
    assert metrics["precision"] == "fp32" and metrics["train_precision"] == TRAIN_PRECISION[cpu_kind]
    assert metrics["tf32"] is None  # CPU: no TF32 (on CUDA: off, device.configure)
    # the final model, on the same test set, as training measured it at its last iteration
    assert v["top1_error"] == pytest.approx(train_metrics["test_error"], abs=1e-6)
    # and the scores are the model's logits on the test images
    saved, model = load_checkpoint(ckpt)
    want = predict_tensor(model, td.test_x, saved["mean"], CPU)
    np.testing.assert_allclose(z["scores"], want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("view", ["tencrop", "center", "multiscale"])
def test_cifar_checkpoint_refuses_imagenet_views(cifar_run, tmp_path, view):
    with pytest.raises(ReproError, match=f"{view}.*do not apply to cifar"):
        evaluate_checkpoint(cifar_run[0], tmp_path / "out", views=["single", view])
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_imagenet_checkpoint_default_views(imnet_run, imnet_eval, val_ds):
    _, train_metrics = imnet_run
    out, metrics = imnet_eval
    assert metrics["model"] == "resnet18" and metrics["iteration"] == 6 and metrics["split"] == "val"
    assert list(metrics["views"]) == ["center", "tencrop", "multiscale"]
    assert metrics["views"]["multiscale"]["scales"] == list(SCALES)
    # trained with flips (the default augmentation), so tested with mirrored views too
    assert metrics["views"]["multiscale"]["flips"] is True and metrics["views"]["tencrop"]["flips"] is True
    assert "scales" not in metrics["views"]["center"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    labels = np.array(val_ds.targets)
    for view, v in metrics["views"].items():
        z = np.load(out / f"scores-{view}.npz")
        np.testing.assert_array_equal(z["labels"], labels)
        assert z["scores"].shape == (30, 10) and np.isfinite(z["scores"]).all()
        assert v["n"] == 30
        assert 0 <= v["top5_error"] <= v["top1_error"] <= 100
        assert {k: v[k] for k in ("top1_error", "top5_error", "n")} == pytest.approx(
            error_rates(torch.from_numpy(z["scores"]), torch.from_numpy(labels))
        )
        if view != "center":  # log-probabilities
            np.testing.assert_allclose(np.exp(z["scores"]).sum(1), 1.0, atol=1e-4)
    # the centre-crop view is what training reported as its validation error
    assert metrics["views"]["center"]["top1_error"] == pytest.approx(train_metrics["test_error"], abs=1e-6)


def test_imagenet_checkpoint_scores_are_the_views(imnet_run, imnet_eval, val_ds, cpu_kind):
    out, metrics = imnet_eval
    assert imnet_run[1]["precision"] == TRAIN_PRECISION[cpu_kind]
    assert metrics["precision"] == "fp32" and metrics["train_precision"] == TRAIN_PRECISION[cpu_kind]
    ckpt, model = load_checkpoint(imnet_run[0])
    mean = ckpt["mean"]
    assert mean.shape == (3, CROP, CROP)
    for view, kw in (("center", {}), ("multiscale", {"scales": SCALES})):
        want = predict_view(model, val_ds, view, mean, CPU, workers=0, test_size=TEST_SIZE, crop=CROP, **kw)
        np.testing.assert_allclose(np.load(out / f"scores-{view}.npz")["scores"], want.numpy(), rtol=1e-4, atol=1e-4)


# bf16 keeps 8 significant bits (unit roundoff 2**-8 = 0.4%); through a network's layers the logits
# move by about that fraction of their scale: allow 5% of the largest logit. fp32 agrees with the
# plain forward pass to 1e-4.
BF16_REL = 0.05


def test_bf16_evaluation_only_when_asked(cifar_run, cifar_eval, imnet_run, imnet_eval, val_ds, tmp_path):
    """--precision bf16 evaluates under bf16 autocast, says so, and stays within bf16's rounding of fp32."""
    for run, (fp32_out, fp32_metrics), view, kw in (
        (cifar_run, cifar_eval, "single", {}),
        (imnet_run, imnet_eval, "center", {"workers": 0}),
    ):
        metrics = evaluate_checkpoint(run[0], tmp_path / view, views=[view], precision="bf16", **kw)
        assert metrics["precision"] == "bf16" and fp32_metrics["precision"] == "fp32"
        bf16 = np.load(tmp_path / view / f"scores-{view}.npz")["scores"]
        fp32 = np.load(fp32_out / f"scores-{view}.npz")["scores"]
        scale = np.abs(fp32).max()
        np.testing.assert_allclose(bf16, fp32, rtol=0, atol=BF16_REL * scale)
        assert np.abs(bf16 - fp32).max() > 1e-5 * scale  # bf16 really was used: fp32 would agree to ~1e-6


def test_multiscale_flips_option(imnet_run, imnet_eval, tmp_path, monkeypatch):
    """Multi-scale flips are an explicit choice (default auto: as the model was trained, here with
    mirrors), recorded in metrics.json with the mean each view subtracted."""
    _, auto = imnet_eval
    assert auto["views"]["multiscale"]["flips"] is True
    assert {v: m["mean"] for v, m in auto["views"].items()} == {
        "center": "per-pixel",
        "tencrop": "per-pixel",
        "multiscale": "per-channel",
    }
    from resnet_repro.evaluation import evaluate as E

    asked = {}  # the flips each view was computed with (this tiny model's scores saturate: they cannot tell)

    def spy(model, dataset, view, *args):
        asked[view] = args[-1]
        return predict_view(model, dataset, view, *args)

    monkeypatch.setattr(E, "predict_view", spy)
    for option, want in (("false", False), ("true", True), ("auto", True)):
        metrics = evaluate_checkpoint(
            imnet_run[0],
            tmp_path / option,
            views=["multiscale", "tencrop"],
            scales=(16,),
            workers=0,
            multiscale_flips=option,
        )
        assert asked == {"multiscale": want, "tencrop": True}  # 10-crop keeps its mirrors: they are the paper's
        assert metrics["views"]["multiscale"]["flips"] is want and metrics["views"]["tencrop"]["flips"] is True
    with pytest.raises(ReproError, match="multiscale_flips must be auto, true or false"):
        evaluate_checkpoint(imnet_run[0], tmp_path / "bad", views=["multiscale"], multiscale_flips="maybe")


def test_cli_multiscale_flips(imnet_run, tmp_path):
    proc = run_cli(
        "evaluate",
        imnet_run[0],
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
        "--views",
        "multiscale",
        "--scales",
        "16",
        "--workers",
        "0",
        "--multiscale-flips",
        "false",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["views"]["multiscale"]["flips"] is False
    bad = run_cli("evaluate", imnet_run[0], "--out", tmp_path / "p", "--multiscale-flips", "yes")
    assert bad.returncode == 2 and "--multiscale-flips" in bad.stderr


def test_imagenet_checkpoint_selected_views_only(imnet_run, tmp_path):
    metrics = evaluate_checkpoint(imnet_run[0], tmp_path, views=["center"], workers=0)
    assert list(metrics["views"]) == ["center"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "scores-center.npz"]


def test_imagenet_checkpoint_refuses_single(imnet_run, tmp_path):
    with pytest.raises(ReproError, match="single.*do not apply to imagenet"):
        evaluate_checkpoint(imnet_run[0], tmp_path, views=["single"])


def test_data_root_override(imnet_run, folder, tmp_path):
    with pytest.raises(ReproError, match="not a directory"):
        evaluate_checkpoint(imnet_run[0], tmp_path / "a", views=["center"], workers=0, data_root=tmp_path / "nowhere")
    copy = shutil.copytree(folder, tmp_path / "copy")
    for c in "0123":  # a smaller val set proves the copy is the one read
        sorted((copy / "val" / c).iterdir())[0].unlink()
    metrics = evaluate_checkpoint(imnet_run[0], tmp_path / "b", views=["center"], workers=0, data_root=str(copy))
    assert metrics["views"]["center"]["n"] == 26


def test_missing_or_corrupt_checkpoint(tmp_path):
    with pytest.raises(ReproError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "missing.pt", tmp_path / "out")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ReproError, match="cannot read checkpoint"):
        evaluate_checkpoint(bad, tmp_path / "out")
    weights = tmp_path / "weights.pt"  # a bare state_dict, not a training checkpoint
    torch.save(ResNet(parse_model_name("resnet20")).state_dict(), weights)
    with pytest.raises(ReproError, match="not a checkpoint written by `resnet-repro train`"):
        evaluate_checkpoint(weights, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- ensemble


def save_scores(path, scores, labels):
    np.savez_compressed(path, scores=np.asarray(scores, np.float32), labels=np.asarray(labels))
    return path


def test_ensemble_averages_softmax_not_logits(tmp_path):
    # each row: probabilities of member A and B; the ensemble is right everywhere while A is wrong on
    # examples 1 and 3 and B on 0 and 2; averaging logits (a geometric mean) would be wrong on 2 and 3
    labels = np.array([0, 1, 2, 1])
    pa = np.array([[0.90, 0.05, 0.05], [0.50, 0.20, 0.30], [1e-6, 0.10, 0.90], [0.45, 0.05, 0.50]])
    pb = np.array([[0.20, 0.50, 0.30], [0.05, 0.90, 0.05], [0.45, 0.50, 0.05], [1e-6, 0.90, 0.10]])
    shift = np.array([[3.0], [-7.0], [11.0], [0.5]])  # softmax is shift-invariant: the scores are logits
    a = save_scores(tmp_path / "a.npz", np.log(pa) + shift, labels)
    b = save_scores(tmp_path / "b.npz", np.log(pb) - 2 * shift, labels)
    r = ensemble([a, b])
    assert r["members"][str(a)]["top1_error"] == pytest.approx(50.0)
    assert r["members"][str(b)]["top1_error"] == pytest.approx(50.0)
    assert r["ensemble"]["top1_error"] == 0.0 and r["ensemble"]["n"] == 4
    # (the constructed case does discriminate)
    assert error_rates(torch.tensor(np.log(pa) + np.log(pb)), torch.tensor(labels))["top1_error"] == pytest.approx(50.0)


def test_ensemble_equals_mean_softmax_on_random_scores(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 300)
    files, probs = [], []
    for k, temp in enumerate((1.0, 3.0, 0.3)):
        s = rng.normal(size=(300, 12)) * temp
        s[np.arange(300), labels] += 1.0
        files.append(save_scores(tmp_path / f"m{k}.npz", s, labels))
        probs.append(F.softmax(torch.tensor(s, dtype=torch.float32), 1))
    r = ensemble(files)
    want = error_rates(torch.stack(probs).mean(0), torch.tensor(labels))
    assert r["ensemble"] == pytest.approx(want)
    assert set(r["members"]) == set(map(str, files))
    for f in files:
        z = np.load(f)
        assert r["members"][str(f)] == pytest.approx(error_rates(z["scores"], z["labels"]))
    two = ensemble(files[:2])
    assert two["ensemble"] == pytest.approx(error_rates(torch.stack(probs[:2]).mean(0), torch.tensor(labels)))
    assert len(two["members"]) == 2


def test_ensemble_rejects_other_examples(tmp_path):
    s = np.zeros((5, 3))
    a = save_scores(tmp_path / "a.npz", s, [0, 1, 2, 0, 1])
    with pytest.raises(ReproError, match="other examples"):  # same labels, another order
        ensemble([a, save_scores(tmp_path / "b.npz", s, [1, 0, 2, 0, 1])])
    with pytest.raises(ReproError, match="other examples"):  # another number of examples
        ensemble([a, save_scores(tmp_path / "c.npz", s[:4], [0, 1, 2, 0])])


def test_ensemble_needs_two_readable_score_files(tmp_path):
    a = save_scores(tmp_path / "a.npz", np.zeros((2, 3)), [0, 1])
    with pytest.raises(ReproError, match="at least two"):
        ensemble([a])
    with pytest.raises(ReproError, match="at least two"):
        ensemble([])
    with pytest.raises(ReproError, match="cannot read scores"):
        ensemble([a, tmp_path / "missing.npz"])
    text = tmp_path / "metrics.json"
    text.write_text('{"not": "scores"}')
    with pytest.raises(ReproError, match="metrics.json"):
        ensemble([a, text])
    other = tmp_path / "other.npz"
    np.savez(other, logits=np.zeros((2, 3)))
    with pytest.raises(ReproError, match="other.npz"):
        ensemble([a, other])


# ---------------------------------------------------------------- CLI


def test_cli_evaluate(cifar_run, cifar_eval, tmp_path):
    out = tmp_path / "cli-out"
    proc = run_cli("evaluate", cifar_run[0], "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == json.loads((out / "metrics.json").read_text())
    want = cifar_eval[1]["views"]["single"]
    assert list(got["views"]) == ["single"]
    assert got["views"]["single"] == pytest.approx(want)
    assert (out / "scores-single.npz").exists()


def test_cli_ensemble(imnet_eval, tmp_path):
    out, _ = imnet_eval
    files = [out / "scores-center.npz", out / "scores-tencrop.npz", out / "scores-multiscale.npz"]
    result = tmp_path / "ensemble.json"
    proc = run_cli("ensemble", *files, "--out", result)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == json.loads(result.read_text())
    want = ensemble(files)
    assert got["ensemble"] == pytest.approx(want["ensemble"])
    assert set(got["members"]) == set(map(str, files))
    for f in files:
        assert got["members"][str(f)] == pytest.approx(want["members"][str(f)])
    assert got["ensemble"]["n"] == 30 and got["ensemble"]["top5_error"] <= got["ensemble"]["top1_error"]


def test_cli_errors_are_one_line(tmp_path):
    missing = tmp_path / "no-run" / "checkpoint.pt"
    proc = run_cli("evaluate", missing, "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert str(missing) in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()
    a = save_scores(tmp_path / "a.npz", np.zeros((2, 3)), [0, 1])
    assert_one_line_error(run_cli("ensemble", a))
