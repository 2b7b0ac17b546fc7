"""The data and device options of every command that reads images, declared once (`DataOptions`).
Torch-free, like the other options modules, so building the parser imports no torch."""
from __future__ import annotations

from dataclasses import dataclass

from compress.errors import CompressError
from compress.options import option, positive_int


def parse_val_split(text: str) -> float | None:
    """--val-split: 'auto' (None), 0 (off) or a fraction in (0, 0.5]."""
    if text.strip().lower() == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        raise CompressError(f"--val-split {text!r} is not a number", "pass auto, 0 (off) or a fraction such as 0.1") from None
    if not (v == 0 or 0 < v <= 0.5):
        raise CompressError(f"--val-split {text} is outside [0, 0.5]",
                            "pass a fraction of the training images such as 0.1, auto, or 0 to turn the split off")
    return v


@dataclass(frozen=True)
class DataOptions:
    """Where the images come from, how the validation split is made, and the device. A command
    offers the ones it uses (`compress.cli.args.add_data_args`)."""

    data: str = option("auto", "--data", "CIFAR-10 folder (cifar-10-batches-py), 'sample' (bundled 4068/1017 images), "
                       "'cifar10' (cache or download), 'imagefolder:PATH', or 'auto': a checkpoint's own dataset, "
                       "else the cache, a download, else the sample", metavar="SOURCE")
    image_size: int | None = option(None, "--image-size", "resize images to N x N px", parse=positive_int, metavar="N",
                                    default_text="an image folder's own size when its images share one, else 64; "
                                                 "CIFAR's 32")
    val_split: float | None = option(None, "--val-split", "fraction of the training images held out (seeded, per "
                                     "class) for every choice the tool makes; the test split is only reported. auto: "
                                     "10%, at least 1000 images (at most a fifth), at most 5000; 0: none, choices "
                                     "then read the test split (said). A checkpoint of ours keeps the split it was "
                                     "trained beside", parse=parse_val_split, metavar="F", default_text="auto")
    val_data: str | None = option(None, "--val-data", "a separate dataset (any --data form, e.g. imagefolder:PATH) "
                                  "whose images are all the validation split, instead of images held out of the "
                                  "training split: for imported weights, whose own training may have seen every "
                                  "training image", metavar="SOURCE")
    stream: bool = option(False, "--stream", "image folders: read the images from disk each epoch through DataLoader "
                          "worker processes instead of holding them decoded in memory (automatic above a quarter of "
                          "RAM, or of GPU memory; COMPRESS_STREAM_ABOVE_MB sets the limit). Results are the same "
                          "either way")
    workers: int | None = option(None, "--workers", "DataLoader processes per training process for a streamed folder",
                                 parse=positive_int, metavar="N",
                                 default_text="the node's CPUs shared among torchrun's processes, at most 8")
    device: str = option("auto", "--device", "auto (cuda when available), cpu or cuda[:N]", metavar="DEVICE")
