"""Checkpoints as plain dicts of tensors and primitives: atomic to write, safe to load.

Every file this toolchain writes loads with `torch.load(path, weights_only=True)`:
    {"format": FORMAT, "kind": "dense" | "pruned" | "slim",
     "model": ModelSpec dict, "state_dict": {...},
     "masks": {param name: bool tensor}        # pruned: what is held at zero
     "pruning_history": [[module, is_out, idxs], ...]   # slim: Torch-Pruning's record
     "meta": {...}}                            # dataset, accuracy, epochs, seed, versions, ...
"""
from __future__ import annotations

import re
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from compress.console import notice
from compress.data import load_dataset, with_validation, with_validation_data
from compress.errors import CompressError
from compress.io import atomic_write
from compress.models import ModelSpec
from compress.models.sources import CodeRefused
from compress.weights import find_weights, read_raw

FORMAT = "compress-checkpoint/1"


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Write `payload` atomically, after proving it reloads with weights_only=True."""
    payload = {"format": FORMAT, **payload}

    def write(tmp: Path):
        torch.save(payload, tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)  # refuses anything not plain data

    return atomic_write(path, write)


def load_checkpoint(path: Path | str, *, kinds: tuple[str, ...] | None = None) -> dict:
    """Read a checkpoint of ours; missing, corrupt and foreign files are clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"checkpoint {path} does not exist", "check the path (a run folder lists its models in manifest.json)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        raise CompressError(f"{path} is not a readable checkpoint ({_short(e)})", "the file is truncated or corrupt; re-create it") from None
    except Exception as e:  # weights_only refusal: pickled modules, argparse namespaces, ...
        raise CompressError(f"{path} is not a compress checkpoint ({_short(e)})",
                            "it holds pickled objects; only files written by this toolchain are accepted") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CompressError(f"{path} is not a compress checkpoint",
                            "train one with `compress train`, or prune one with `compress unstructured|filter`")
    if kinds and ckpt.get("kind") not in kinds:
        raise CompressError(f"{path} is a {ckpt.get('kind')} model; this command needs a {' or '.join(kinds)} model")
    return ckpt


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def build_spec(spec: ModelSpec, from_checkpoint: bool = False) -> nn.Module:
    """`spec.build()`; for a checkpoint, a hint on what to do when its model source has gone away."""
    try:
        return spec.build()
    except CodeRefused:
        raise
    except CompressError as e:
        if spec.source_kind == "registry" or not from_checkpoint:
            raise
        raise CompressError(f"{e.message} (the checkpoint rebuilds its model from {spec.name})",
                            "restore that file or module at the same place, or import the weights again with "
                            "`compress import --model SOURCE --checkpoint WEIGHTS`") from None


def load_dense(path: Path | str, spec: ModelSpec | None = None, *, trust_pickle: bool = False) -> dict:
    """A dense checkpoint of ours from any weights file, checked against the model before
    anything is written. Our own files carry their model; a foreign file (state dict, nested
    dict, safetensors, pickled module with `trust_pickle`) needs `spec`. An imported checkpoint
    has meta["imported"] (what was found and ignored) and no accuracy yet."""
    path = Path(path)
    obj = read_raw(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = load_checkpoint(path, kinds=("dense",))
        if spec is not None and ModelSpec.from_dict(ckpt["model"]).name != spec.name:
            raise CompressError(f"{path} is a {ckpt['model']['name']} checkpoint, not {spec.name}",
                                "drop --model (the checkpoint names its own) or pass the matching checkpoint")
        return ckpt
    if spec is None:
        raise CompressError(f"{path} holds weights only, not which architecture they belong to",
                            "pass --model (a registry name, torchvision:NAME or file.py:CALLABLE)")
    spec = stem_of_weights(obj, spec)
    model = build_spec(spec)
    found = find_weights(obj, model, path)
    check_finite(found.state_dict, str(path))
    model.load_state_dict(with_metadata(model, found.state_dict))
    return {"format": FORMAT, "kind": "dense", "model": spec.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": {"accuracy": None, "complete": True, "imported": {
                "path": str(path.resolve()), "found": found.found, "ignored": found.ignored,
                "stripped": found.stripped, "trust_pickle": found.pickled_module, "summary": found.describe()}}}


def stem_of_weights(obj, spec: ModelSpec) -> ModelSpec:
    """`torchvision:resnet18` on small images is built with the CIFAR stem; weights trained with
    torchvision's own ImageNet stem (a 7x7 conv1, what a user's fine-tuning script keeps) get
    that stem instead, and the output says so."""
    if spec.cifar_variant != "resnet18":
        return spec
    stems = [v for d in _dicts(obj) for k, v in d.items()
             if isinstance(v, torch.Tensor) and re.search(r"(^|\.)conv1\.weight$", k) and "layer" not in k]
    if not stems or stems[0].ndim != 4 or stems[0].shape[-1] != 7:
        return spec
    notice(f"the weights have torchvision's ImageNet stem (7x7 conv1, then a max-pool): {spec.name} is built with it "
           "(--model-arg cifar_stem=false), not the CIFAR stem chosen for small images")
    return replace(spec, args={**spec.args, "cifar_stem": False})


def _dicts(obj, depth: int = 0):
    """Every dict inside a loaded weights file (a state dict may sit under 'state_dict', 'model', ...)."""
    if isinstance(obj, dict):
        yield obj
        if depth < 2:
            for v in obj.values():
                yield from _dicts(v, depth + 1)


def input_contract(meta: dict) -> dict:
    """What the model expects as input: image size, per-channel mean/std (in [0, 1] units,
    applied after scaling pixels to [0, 1]), layout, and the class names in output order."""
    ds = meta.get("dataset", {})
    return {"layout": "NCHW float32", "scale": "pixel / 255", "mean": ds.get("mean"), "std": ds.get("std"),
            "data_source": ds.get("source"), "image_size": ds.get("image_size"), "classes": ds.get("classes"),
            # the images held out beside the model: `quantize MODEL.onnx` gates on the same ones
            **({"val_split": ds["val_split"]} if "val_split" in ds else {})}


def with_contract(data, ckpt: dict):
    """The dataset normalised as the checkpoint's model expects (its recorded --mean/--std)."""
    ds = ckpt.get("meta", {}).get("dataset", {})
    return data.normalised(ds.get("mean"), ds.get("std"))


def split_for(data, ckpt: dict | None, requested: float | None, val_data: str | None = None):
    """The data with the validation split its model was trained beside.

    A checkpoint of ours records its split: the same images are held out again (`0`: none), so
    validation never holds an image the model trained on. Imported weights and new training take
    `requested` (--val-split; None: auto). A checkpoint from before validation splits trained on
    every training image: no split, and choices fall back to the test split (said). Data whose
    split is already decided (a suite's later runs) is returned as it is.
    """
    if "val_split" in data.extra:
        return data
    meta = (ckpt or {}).get("meta", {})
    recorded = meta.get("dataset") if ckpt is not None and "imported" not in meta else None
    vs = (recorded or {}).get("val_split")
    chosen_on = (meta.get("dataset") or {}).get("val_split")  # imported weights too
    if val_data is None and isinstance(chosen_on, dict) and chosen_on.get("separate"):
        val_data = chosen_on["source"]  # validated on a separate folder: the same one again
    if val_data is not None:
        held_out = load_dataset(val_data, quiet=True, image_size=data.image_size)
        return with_validation_data(data, held_out, val_data)
    if recorded is None:
        return with_validation(data, requested)
    if "val_split" in recorded:
        return with_validation(data, 0 if vs is None else vs["fraction"], 0 if vs is None else vs["seed"])

    notice("this checkpoint was trained on every training image (before validation splits): there is no "
           "validation split, so choices read the test split")
    return with_validation(data, 0)


def recorded_data(checkpoint: Path | None) -> tuple[str | None, int | None]:
    """(dataset source, image size) a checkpoint of ours was trained on; (None, None) for foreign
    weights or none. `--data auto` then means that dataset, not whatever `auto` finds first."""
    if checkpoint is None:
        return None, None
    try:
        obj = read_raw(Path(checkpoint))
    except CompressError:
        return None, None  # the command's own loading says what is wrong with the file
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        return None, None
    meta, model = obj.get("meta") or {}, obj.get("model") or {}
    return (meta.get("dataset") or {}).get("source"), model.get("image_size")


def starting_data(source: str = "auto", checkpoint: Path | None = None, *, image_size: int | None = None,
                  stream: bool = False, workers: int | None = None, quiet: bool = False):
    """The data a training or pruning command starts from: `source`; for "auto" with a checkpoint of
    ours, the dataset that checkpoint was trained on, at its image size. A recorded dataset this
    machine cannot read (a folder left on another machine) falls back to "auto", said, and the
    dense model is then measured again on that data. One rule for the CLI and `compress.api`."""
    if source == "auto" and checkpoint is not None:
        recorded, recorded_size = recorded_data(checkpoint)
        if recorded:
            try:
                return load_dataset(recorded, quiet=quiet, image_size=image_size or recorded_size, stream=stream,
                                    workers=workers)
            except CompressError as e:
                notice(f"the checkpoint's dataset is not readable here ({e.message}); reading --data auto, and "
                       "the dense model is measured again on it")
    return load_dataset(source, quiet=quiet, image_size=image_size, stream=stream, workers=workers)


def checkpoint_dataset(ckpt: dict, source: str = "auto", *, val_split: float | None = None,
                       val_data: str | None = None, image_size: int | None = None, stream: bool = False,
                       workers: int | None = None):
    """The data a checkpoint is measured on: `source`, or for "auto" the dataset it was trained on,
    at its image size, with its recorded normalisation and its validation split (on the CPU).
    One rule for every command and the library (`compress.api`) that reads a checkpoint back."""
    if source == "auto":
        source = ckpt.get("meta", {}).get("dataset", {}).get("source", "auto")
    data = load_dataset(source, quiet=True, image_size=image_size or ckpt["model"].get("image_size"), stream=stream,
                        workers=workers)
    return split_for(with_contract(data, ckpt), ckpt, val_split, val_data)


def check_fits_data(spec: ModelSpec, data, source: str = "the model") -> None:
    """A checkpoint and a dataset must agree on classes and image size before any work starts."""
    if spec.num_classes != data.num_classes:
        raise CompressError(f"{source} predicts {spec.num_classes} classes but the data has {data.num_classes}",
                            "pass the --data it was trained on")
    if spec.image_size != data.image_size:
        raise CompressError(f"{source} was trained on {spec.image_size} px images but the data has "
                            f"{data.image_size} px", f"pass --image-size {spec.image_size}")


def check_finite(state: dict, what: str) -> None:
    """Weights holding NaN or infinity are refused on load: retraining them only diverges, and
    every number measured from them would be meaningless."""
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CompressError(f"the weights of {what} hold NaN or infinite values ({len(bad)} tensors, first "
                            f"{bad[0]!r})", "the training that wrote them diverged; use an earlier checkpoint")


def load_state(model: nn.Module, state: dict, name: str) -> None:
    """`load_state_dict` with a message a user can act on when the architecture differs, after
    checking that every weight is finite."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape of {wrong[0]}: file {tuple(state[wrong[0]].shape)} vs model {tuple(own[wrong[0]].shape)}")
        raise CompressError(f"the weights do not fit a {name} model ({detail})",
                            "the checkpoint was made for another architecture or width; pass the matching --model/--width")
    check_finite(state, f"this {name} checkpoint")
    model.load_state_dict(with_metadata(model, state))


def with_metadata(model: nn.Module, state: dict) -> dict:
    """`state` carrying the per-module versions a fresh `model.state_dict()` has: checkpoints keep
    plain dicts, and some modules (torchvision's MNASNet) read their version while loading."""
    meta = getattr(model.state_dict(), "_metadata", None)
    if meta is None or hasattr(state, "_metadata"):
        return state
    state = OrderedDict(state)
    state._metadata = meta
    return state
