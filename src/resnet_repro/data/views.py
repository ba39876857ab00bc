"""The test views of a trained network, one implementation for the training curve (batches) and
the final evaluation (evaluate): the single original view (CIFAR), centre crop, 10-crop and
fully-convolutional multi-scale testing (ImageNet), and the top-1/top-5 error of scores."""

import torch
import torch.nn.functional as F

from resnet_repro.data import small, stream
from resnet_repro.device import autocast, memory_format
from resnet_repro.errors import ReproError

VIEWS = ("single", "center", "tencrop", "multiscale")
# the mean each ImageNet view subtracts (recorded in metrics.json): crop-sized views the per-pixel mean image
MEAN_KIND = {"center": "per-pixel", "tencrop": "per-pixel", "multiscale": "per-channel"}
DEFAULT_SCALES = (224, 256, 384, 480, 640)


def _forward(model, x_uint8, mean, device, bf16, channels_last):
    x = small.normalize(x_uint8.to(device, non_blocking=True), mean).contiguous(
        memory_format=memory_format(channels_last)
    )
    with autocast(device, bf16):
        return model(x).float()


@torch.no_grad()
def predict_tensor(model, x_uint8, mean, device, bf16=False, channels_last=False, batch_size=500):
    """Logits (N, C) on the CPU for in-memory uint8 images: the single original view."""
    model.eval()
    out = [
        _forward(model, x_uint8[i : i + batch_size], mean, device, bf16, channels_last).cpu()
        for i in range(0, len(x_uint8), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def predict_view(
    model,
    dataset,
    view,
    mean,
    device,
    bf16=False,
    channels_last=False,
    batch_size=250,
    workers=4,
    test_size=256,
    crop=224,
    scales=DEFAULT_SCALES,
    flips=True,
):
    """Scores (N, C) for a streamed data set. center: logits of the centre crop. tencrop: log of the
    softmax averaged over the 10 crops (the 5 unmirrored ones if not `flips`). multiscale: log of the
    softmax averaged over every scale in `scales` (shorter side), each image whole (fully
    convolutional), and its mirror image if `flips` (the paper's text does not mention flips there).
    flips=False is for a model trained without mirrored images (augment.flip: false).
    `mean` is the per-pixel mean image at the crop size: crops subtract it pixel by pixel, whole
    images (multiscale) its per-channel mean (small.channel_mean)."""
    model.eval()
    forward = lambda x, m=mean: _forward(model, x, m, device, bf16, channels_last)  # noqa: E731
    if view == "center":
        batches = _loader(dataset, stream.eval_transform("center", test_size, crop), batch_size, workers, device)
        return torch.cat([forward(x).cpu() for x, _ in batches])
    if view == "tencrop":
        tf = stream.eval_transform("tencrop", test_size, crop, flips=flips)
        out = []
        for x, _ in _loader(dataset, tf, max(1, batch_size // 10), workers, device):
            b, k = x.shape[:2]  # k = 10 crops, or 5 without flips
            out.append(F.softmax(forward(x.flatten(0, 1)), 1).view(b, k, -1).mean(1).cpu())
        return torch.cat(out).clamp_min(1e-12).log()
    if view == "multiscale":
        # whole images are not crop-sized: no per-pixel correspondence with the mean image
        channel_mean = small.channel_mean(mean)
        whole = lambda x: forward(x, channel_mean)  # noqa: E731
        total = sum(_whole_images(whole, dataset, s, batch_size, crop, workers, flips) for s in scales)
        return (total / len(scales)).clamp_min(1e-12).log()
    raise ReproError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)}")


def _loader(dataset, transform, batch_size, workers, device):
    return torch.utils.data.DataLoader(
        stream.Transformed(dataset, transform),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


def _whole_images(forward, dataset, scale, batch_size, crop, workers, flips):
    """Softmax (N, C) of every image whole at shorter side `scale` (and its mirror if `flips`): images
    of one size go through the network together."""
    probs = []
    # about as many pixels per forward pass as a centre-crop batch (flips included)
    bs = max(1, int(batch_size * (crop / scale) ** 2 / 2))
    for batch in torch.utils.data.DataLoader(
        stream.Transformed(dataset, stream.eval_transform("full", scale=scale)),
        batch_size=bs,
        num_workers=workers,
        collate_fn=lambda items: [x for x, _ in items],
    ):
        out = [None] * len(batch)
        for shape in {x.shape for x in batch}:
            idx = [i for i, x in enumerate(batch) if x.shape == shape]
            x = torch.stack([batch[i] for i in idx])
            views = torch.cat([x, x.flip(3)]) if flips else x
            p = F.softmax(forward(views), 1)
            p = p.view(-1, len(idx), p.shape[1]).mean(0).cpu()
            for j, i in enumerate(idx):
                out[i] = p[j]
        probs.append(torch.stack(out))
    return torch.cat(probs)


def error_rates(scores, labels):
    """Top-1 and top-5 error in percent."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    k = min(5, scores.shape[1])
    topk = scores.topk(k, dim=1).indices
    hit = topk == labels[:, None]
    return {
        "top1_error": 100.0 * (1 - hit[:, 0].float().mean().item()),
        "top5_error": 100.0 * (1 - hit.any(1).float().mean().item()),
        "n": int(len(labels)),
    }
