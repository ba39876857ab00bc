"""Layer responses (Figure 7): the std of the output of every 3x3 convolution after its BN and
before the ReLU / addition, over the evaluation split, in layer order."""
import csv
import io

import torch
from torch import nn

from . import data as D
from .device import autocast, precision_name, resolve_device, use_bf16
from .errors import ReproError
from .evaluate import load_checkpoint
from .files import write_text
from .models import parse_model_name


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
    """Std of each 3x3 layer's BN output over all examples, positions and channels (float64 sums);
    the forward pass in fp32 unless bf16 (autocast)."""
    model.eval()
    pairs = bn_after_3x3(model)
    sums = torch.zeros(len(pairs), 3, dtype=torch.float64, device=device)  # n, sum, sum of squares

    def hook(i):
        def f(module, inputs, output):
            o = output.double()
            sums[i] += torch.stack([o.new_tensor(o.numel()), o.sum(), (o * o).sum()])
        return f

    handles = [bn.register_forward_hook(hook(i)) for i, (_, bn) in enumerate(pairs)]
    try:
        for i in range(0, len(images_uint8), batch_size):
            with autocast(device, bf16):
                model(D.normalize(images_uint8[i:i + batch_size].to(device), mean))
    finally:
        for h in handles:
            h.remove()
    n, s, ss = sums.cpu().unbind(1)
    std = (ss / n - (s / n) ** 2).clamp_min(0).sqrt()
    return [{"layer": i + 1, "module": name, "std": float(v)} for i, ((name, _), v) in enumerate(zip(pairs, std))]


def responses_from_checkpoint(checkpoint, out_csv, device="auto", data_root=None, max_images=None, precision=None):
    """Figure 7's layer responses of a checkpoint, written as CSV. precision: as for evaluation (default
    the spec's eval_precision, fp32); the CSV's precision column records what was used."""
    device = resolve_device(device)
    ckpt, model = load_checkpoint(checkpoint, device)
    spec = ckpt["spec"]
    d = dict(spec["data"], **({"root": data_root} if data_root else {}))
    if parse_model_name(spec["model"]).family != "cifar":
        raise ReproError(f"layer responses are the paper's CIFAR analysis (Figure 7); {spec['model']} is an ImageNet model")
    td = D.small_data(d)
    images = td.test_x[:max_images] if max_images else td.test_x
    bf16 = use_bf16(precision or spec.get("eval_precision", "fp32"), device)
    rows = layer_responses(model, images, ckpt["mean"].to(device), device, bf16=bf16)
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["model", "layer", "module", "std", "precision"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"model": spec["model"], **r, "precision": precision_name(bf16)})
    write_text(out_csv, buf.getvalue())
    return rows
