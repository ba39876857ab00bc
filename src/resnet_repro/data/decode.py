"""JPEG files read as bytes by the workers and decoded where `decode` says: on the GPU by TorchCodec's
nvJPEG, or on the CPU (TorchCodec, else PIL)."""

import numpy as np
import torch

from resnet_repro.data.stream import sample_key
from resnet_repro.errors import ReproError

JPEG_EXTENSIONS = (".jpg", ".jpeg")


class EncodedImages(torch.utils.data.Dataset):
    """(the file's bytes as a uint8 tensor, label, index): workers only read, the device decodes (and
    draws the sample's augmentation from its index: stream.keyed_uniforms)."""

    def __init__(self, base):
        self.samples = base.samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        _, i = sample_key(key)  # (epoch, index) from a PassSampler, or an index
        path, label = self.samples[i]
        return read_bytes(path), label, i


def read_bytes(path):
    """A file's bytes as a 1-D uint8 tensor."""
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def collate_encoded(batch):
    """One flat byte tensor and the files' lengths (then the labels and indices): one shared-memory
    block per batch between the worker and the trainer (a tensor per file would cost a file descriptor
    each)."""
    return (
        torch.cat([b[0] for b in batch]),
        torch.tensor([len(b[0]) for b in batch]),
        torch.tensor([b[1] for b in batch]),
        torch.tensor([b[2] for b in batch]),
    )


def split_encoded(flat, lengths):
    return list(torch.split(flat, lengths.tolist()))


def decode_where(setting, dataset, device):
    """Where training images are decoded: 'workers' (PIL, in DataLoader processes) or 'device'
    (TorchCodec's decode_jpeg: nvJPEG on CUDA, a batch at a time, which frees the CPU cores that
    otherwise limit ImageNet throughput; its libjpeg-turbo on a CPU). auto: the device on CUDA when
    every file is a JPEG."""
    all_jpeg = all(str(path).lower().endswith(JPEG_EXTENSIONS) for path, _ in dataset.samples)
    if setting == "device" and not all_jpeg:
        raise ReproError("data.decode: device needs JPEG files (.jpg/.jpeg) only; use workers (or auto) for others")
    if setting == "auto":
        return "device" if device.type == "cuda" and all_jpeg else "workers"
    return setting


def jpeg_decoder():
    """Which library decodes on the device: 'torchcodec' (nvJPEG on CUDA, libjpeg-turbo on a CPU),
    or 'pil' (on the CPU, then copied to the device) where TorchCodec is not installed.
    torchvision.io's decoders are deprecated (and to be removed) in favour of TorchCodec."""
    try:
        import torchcodec.decoders  # noqa: F401

        return "torchcodec"
    except (ImportError, OSError, RuntimeError):  # not installed, or its libraries do not load here
        return "pil"


def _decode_pil(data):
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def decode_on_device(encoded, device):
    """JPEG bytes (a list of 1-D uint8 CPU tensors) -> a list of uint8 (3, H, W) RGB images on
    `device`, with TorchCodec (all of a batch in one nvJPEG call on CUDA). A file the batched
    decoder refuses (ImageNet has a few CMYK JPEGs and one PNG named .JPEG) is decoded one by one,
    by any format's decoder on the CPU if need be."""
    if jpeg_decoder() == "pil":
        return [_decode_pil(data).to(device) for data in encoded]
    from torchcodec.decoders import decode_image, decode_jpeg

    try:
        return decode_jpeg(list(encoded), mode="RGB", device=device)
    except RuntimeError:
        out = []
        for data in encoded:
            try:
                out.append(decode_jpeg(data, mode="RGB", device=device))
            except RuntimeError:
                try:
                    out.append(decode_image(data, mode="RGB").to(device))
                except RuntimeError:
                    out.append(_decode_pil(data).to(device))
        return out
