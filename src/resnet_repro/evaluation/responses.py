"""Layer responses (Figure 7): the std of the output of every 3x3 convolution after its BN and
before the ReLU / addition, over the evaluation split, in layer order. `std` is over all N*H*W*C
elements of a layer's output (the stem's 3x3 layer included); `std_per_channel` is each channel's
std over N*H*W, averaged over the channels, so a reader can see whether the comparison depends on
pooling the channels (a channel's mean offset adds to `std`, not to `std_per_channel`)."""

import csv
import io

import torch
from torch import nn

from resnet_repro.data import small
from resnet_repro.device import autocast, configure, precision_name, resolve_device, use_bf16
from resnet_repro.errors import ReproError
from resnet_repro.evaluation.evaluate import load_checkpoint
from resnet_repro.files import write_text
from resnet_repro.models import parse_model_name


def bn_after_3x3(model):
    """[(name, bn)] for the BN that follows each 3x3 conv, in the order the layers run (module
    registration order, which is forward order for these nets)."""
    pairs, pending = [], None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            pending = name if m.kernel_size == (3, 3) else None
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            pairs.append((name, m))
            pending = None
    return pairs


@torch.no_grad()
def layer_responses(model, images_uint8, mean, device, batch_size=500, bf16=False):
    """Std of each 3x3 layer's BN output over all examples, positions and channels (`std`), and the
    per-channel std over examples and positions averaged over channels (`std_per_channel`), both
    population stds from one pass of per-channel float64 sums; the forward pass in fp32 unless bf16
    (autocast)."""
    model.eval()
    pairs = bn_after_3x3(model)
    sums = [torch.zeros(3, bn.num_features, dtype=torch.float64, device=device) for _, bn in pairs]  # n, sum, sum sq.

    def hook(i):
        def f(module, inputs, output):
            o = output.double().transpose(0, 1).flatten(1)  # (C, N*H*W)
            sums[i] += torch.stack([o.new_full((o.shape[0],), o.shape[1]), o.sum(1), (o * o).sum(1)])

        return f

    handles = [bn.register_forward_hook(hook(i)) for i, (_, bn) in enumerate(pairs)]
    try:
        for i in range(0, len(images_uint8), batch_size):
            with autocast(device, bf16):
                model(small.normalize(images_uint8[i : i + batch_size].to(device), mean))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for i, ((name, _), layer) in enumerate(zip(pairs, sums)):
        n, s, ss = layer.cpu()
        pooled = (ss.sum() / n.sum() - (s.sum() / n.sum()) ** 2).clamp_min(0).sqrt()
        per_channel = (ss / n - (s / n) ** 2).clamp_min(0).sqrt().mean()
        rows.append({"layer": i + 1, "module": name, "std": float(pooled), "std_per_channel": float(per_channel)})
    return rows


def responses_from_checkpoint(checkpoint, out_csv, device="auto", data_root=None, max_images=None, precision=None):
    """Figure 7's layer responses of a checkpoint, written as CSV. precision: as for evaluation (default
    the spec's eval_precision, fp32); the CSV's precision column records what was used."""
    device = resolve_device(device)
    configure(device)  # TF32 off: fp32 responses are fp32 on a GPU too
    ckpt, model = load_checkpoint(checkpoint, device)
    spec = ckpt["spec"]
    d = dict(spec["data"], **({"root": data_root} if data_root else {}))
    if parse_model_name(spec["model"]).family != "cifar":
        raise ReproError(
            f"layer responses are the paper's CIFAR analysis (Figure 7); {spec['model']} is an ImageNet model"
        )
    td = small.small_data(d)
    images = td.test_x[:max_images] if max_images else td.test_x
    bf16 = use_bf16(precision or spec.get("eval_precision", "fp32"), device)
    rows = layer_responses(model, images, ckpt["mean"].to(device), device, bf16=bf16)
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["model", "layer", "module", "std", "std_per_channel", "precision"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"model": spec["model"], **r, "precision": precision_name(bf16)})
    write_text(out_csv, buf.getvalue())
    return rows
