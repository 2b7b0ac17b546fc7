"""Datasets as whole uint8 tensors, batched and augmented on the training device.

CIFAR-10 is small enough to live on the GPU (176 MiB as uint8, all 60,000 images), so a per-image PIL pipeline
would only add a CPU bottleneck: we read the official python batches ourselves, keep them as
one tensor, and crop/flip/normalise whole batches with tensor ops. Image folders too big for
memory are streamed instead (`imagefiles`).

    dataset     Dataset, the validation split
    sources     load_dataset: CIFAR-10 (cache, download, bundled sample), image folders
    imagefolder folders of class sub-folders, read into a Dataset
    imagefiles  decoding files; the streamed path
    loader      Loader, eval_loader, calibration_batch
"""
from compress.data.dataset import (
                                   CIFAR10_MEAN,
                                   CIFAR10_STD,
                                   VAL_SEED,
                                   Dataset,
                                   auto_val_fraction,
                                   with_validation,
                                   with_validation_data,
)
from compress.data.loader import Loader, calibration_batch, eval_loader
from compress.data.sources import CIFAR10_DIR, OFFICIAL_MD5, SAMPLE_ROOT, default_cache_dir, load_dataset, read_cifar10
from compress.data_options import parse_val_split  # torch-free: the parser reads it

__all__ = ["CIFAR10_DIR", "CIFAR10_MEAN", "CIFAR10_STD", "OFFICIAL_MD5", "SAMPLE_ROOT", "VAL_SEED", "Dataset",
           "Loader", "auto_val_fraction", "calibration_batch", "default_cache_dir", "eval_loader", "load_dataset",
           "parse_val_split", "read_cifar10", "with_validation", "with_validation_data"]
