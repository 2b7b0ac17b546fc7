"""Where a model comes from: the registry, torchvision, or the user's own code.

A model source is one string, saved in every checkpoint so the model can be rebuilt without
pickling it:

    vgg13                        a registered architecture (`compress models`)
    torchvision:resnet50         any torchvision classification builder, random init, no download
    timm:convnext_tiny           any timm model (the optional `timm` extra), random init, no download
    path/to/my_vgg.py:vgg13      a function or class in a Python file that returns an nn.Module
    package.module:make_net      the same, from an importable module

plus keyword arguments (`--model-arg depth=20`, parsed as YAML scalars). File sources are
stored with their absolute path: reloading imports the file again.

Importing a file or module runs its code, so a source read from a checkpoint, a manifest or
any other file is never imported on the file's word alone: only a source the user named
(`--model` on the command line, `allow_code`) or every source after `--trust-code`
(`trust_code`) is. Registry and `torchvision:` names resolve only to their own builders.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import torch.nn as nn
import torchvision
import yaml

from compress.errors import CompressError, did_you_mean

TORCHVISION = "torchvision:"
TIMM = "timm:"
# torchvision builders the registry has CIFAR-stem variants of (stride-1 stem, no max-pool):
# for small images these are built instead of the ImageNet stem, which would shrink 32 px to 1 px.
CIFAR_STEM_VARIANTS = {"resnet18": "resnet18", "mobilenet_v2": "mobilenet_v2"}
SMALL_IMAGE = 64  # px: at or below this, the CIFAR-stem variant is built
# torchvision builders with auxiliary classifiers for training (GoogLeNet, Inception v3): built
# without them (`--model-arg aux_logits=true` keeps them; the loop then trains the main output)
AUX_HEADS = ("googlenet", "inception_v3")


CODE_KINDS = ("file", "module")  # sources whose builder is imported, so runs code
_allowed: set[str] = set()  # code sources the user named in this process (canonical form)
_trust_all = False  # --trust-code: every code source may run


def allow_code(source: str) -> None:
    """The user named this source (`--model`): importing it is their choice."""
    if kind_of(source) in CODE_KINDS:
        _allowed.add(canonical(source))


def trust_code(on: bool = True) -> None:
    """`--trust-code`: code sources recorded in files may be imported too (the manifest records it)."""
    global _trust_all
    _trust_all = on


def reset_code_trust() -> None:
    """Forget what earlier commands of this process allowed."""
    _allowed.clear()
    trust_code(False)


def code_trusted() -> bool:
    return _trust_all


class CodeRefused(CompressError):
    """A file asked to import a model source the user did not name."""


def check_allowed(source: str, origin: str = "a checkpoint") -> None:
    """Refuse to import a code source that only a file named (see the module's docstring)."""
    if kind_of(source) not in CODE_KINDS or _trust_all or canonical(source) in _allowed:
        return
    raise CodeRefused(f"{origin} names the model source {source!r}, which would import and run code; "
                        "not run", f"if you trust it, name it yourself with --model {source}, or pass --trust-code")


def kind_of(source: str) -> str:
    """'registry' | 'torchvision' | 'timm' | 'file' | 'module'."""
    if source.startswith(TORCHVISION):
        return "torchvision"
    if source.startswith(TIMM):
        return "timm"
    if ":" not in source:
        return "registry"
    target = source.rsplit(":", 1)[0]
    return "file" if target.endswith(".py") or "/" in target or "\\" in target else "module"


def canonical(source: str) -> str:
    """The form saved in checkpoints: file paths made absolute, so other folders can reload them."""
    if kind_of(source) == "file":
        target, attr = source.rsplit(":", 1)
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return source


def label(source: str) -> str:
    """A short name for folders and titles: 'vgg13', 'resnet50', or 'my_vgg.vgg13' (file or
    module, then the callable: a user's vgg13 does not share run folders with the registry's)."""
    kind = kind_of(source)
    if kind == "torchvision":
        name = source[len(TORCHVISION):]
    elif kind == "timm":
        name = f"timm.{source[len(TIMM):]}"
    elif kind == "registry":
        name = source
    else:
        target, attr = source.rsplit(":", 1)
        stem = Path(target).stem if kind == "file" else target.rsplit(".", 1)[-1]
        name = f"{stem}.{attr}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def parse_model_args(pairs: list[str] | None) -> dict:
    """['depth=20', 'dropout=0.5'] -> {'depth': 20, 'dropout': 0.5}; values are YAML scalars."""
    args = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CompressError(f"--model-arg {pair!r} is not KEY=VALUE", "e.g. --model-arg num_blocks=3")
        try:
            args[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            args[key.strip()] = value
    return args


def check_source(source: str) -> None:
    """Fail fast (before data is read) on a source that cannot name a builder."""
    kind = kind_of(source)
    if kind == "torchvision":
        _check_torchvision_name(source[len(TORCHVISION):])
    elif kind == "timm":
        _check_timm_name(source[len(TIMM):])
    elif kind in ("file", "module"):
        _resolve_callable(source)


def build_from_source(source: str, args: dict, *, num_classes: int, image_size: int, in_channels: int,
                      width: float) -> nn.Module:
    """A freshly initialised module from any source (the registry is handled by the caller)."""
    kind = kind_of(source)
    if kind != "registry" and width != 1.0:
        raise CompressError(f"--width applies to registered models only, not {source}",
                            "pass the width through --model-arg if your builder takes one")
    if kind == "torchvision":
        return _torchvision(source[len(TORCHVISION):], args, num_classes, image_size, in_channels)
    if kind == "timm":
        return _timm(source[len(TIMM):], args, num_classes, in_channels)
    fn = _resolve_callable(source)
    kwargs = dict(args)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "num_classes" in params and "num_classes" not in kwargs:
        kwargs["num_classes"] = num_classes  # the data decides, unless the user said otherwise
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise CompressError(f"calling {source} failed ({e})", "pass its arguments with --model-arg KEY=VALUE") from None
    except CompressError:
        raise
    except Exception as e:  # the user's code: say where it failed, keep the traceback for --debug
        raise CompressError(f"building the model with {source} raised {type(e).__name__}: {e}",
                            "fix the builder, or run with --debug for the traceback") from e
    if not isinstance(model, nn.Module):
        raise CompressError(f"{source} returned {type(model).__name__}, not a torch.nn.Module",
                            "point --model at a function or class that returns the network")
    return model


def _check_torchvision_name(name: str) -> None:
    available = torchvision.models.list_models(module=torchvision.models)  # classification only
    if name not in available:
        raise CompressError(f"torchvision has no classification model {name!r}", did_you_mean(name, available))


def _torchvision(name: str, args: dict, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    _check_torchvision_name(name)
    if in_channels != 3:
        raise CompressError(f"torchvision:{name} takes 3-channel images, the data has {in_channels}",
                            "use a registered model or your own builder for other inputs")
    if "weights" in args and args["weights"] not in (None, "none", "None"):
        raise CompressError("pretrained torchvision weights are not downloaded by this tool",
                            "save them once with torchvision and pass the file with --checkpoint")
    kwargs = {k: v for k, v in args.items() if k != "weights"}
    if name in AUX_HEADS:  # training-only heads return a named tuple in train mode: off unless asked for
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise CompressError(f"torchvision:{name} does not take these arguments ({e})",
                            "check --model-arg against torchvision's documentation") from None
    except (ValueError, AssertionError, RuntimeError) as e:  # the builder's own checks (sizes, shapes)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CompressError(f"torchvision:{name} cannot be built so ({first})",
                            "pass --image-size N with a size it takes (e.g. 224), or other --model-arg values") from None


def _timm_module():
    try:
        import timm  # optional: `pip install "compress-toolchain[timm]"`
    except ImportError:
        raise CompressError("timm: sources need the timm package, which is not installed",
                            'pip install "compress-toolchain[timm]" (or pip install timm)') from None
    return timm


def _check_timm_name(name: str) -> None:
    available = _timm_module().list_models()
    if name not in available:
        raise CompressError(f"timm has no model {name!r}", did_you_mean(name, available))


def _timm(name: str, args: dict, num_classes: int, in_channels: int) -> nn.Module:
    timm = _timm_module()
    _check_timm_name(name)
    if args.get("pretrained") not in (None, False, "false", "False"):
        raise CompressError("pretrained timm weights are not downloaded by this tool",
                            "save them once with timm and pass the file with --checkpoint")
    kwargs = {k: v for k, v in args.items() if k != "pretrained"}
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    except TypeError as e:
        raise CompressError(f"timm:{name} does not take these arguments ({e})",
                            "check --model-arg against timm's documentation") from None


def _resolve_callable(source: str):
    target, sep, attr = source.rpartition(":")
    if not sep or not target or not attr:
        raise CompressError(f"model source {source!r} is not FILE.py:CALLABLE or package.module:CALLABLE",
                            "e.g. --model my_vgg.py:vgg13")
    if kind_of(source) == "file":
        module = _import_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise CompressError(f"cannot import module {target!r} ({e})",
                                "check the name and that it is on PYTHONPATH, or pass FILE.py:CALLABLE") from None
        except Exception as e:
            raise CompressError(f"importing {target} raised {type(e).__name__}: {e}", "fix the module") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            raise CompressError(f"{target} has no {attr!r}", did_you_mean(attr, names))
        obj = getattr(obj, part)
    if not callable(obj):
        raise CompressError(f"{target}:{attr} is a {type(obj).__name__}, not a function or class",
                            "point --model at what builds the network")
    return obj


def _import_file(path: Path):
    """Import a .py file under a name unique to its path (two files may share a stem)."""
    path = path.resolve()
    if not path.is_file():
        raise CompressError(f"model file {path} does not exist",
                            "check the path; a checkpoint built from a file needs that file to rebuild the model")
    name = f"compress_user_model_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise CompressError(f"importing {path} raised {type(e).__name__}: {e}",
                            "fix the file, or run with --debug for the traceback") from e
    finally:
        sys.path.remove(str(path.parent))
    sys.modules[name] = module
    return module


def cifar_stem_variant(source: str, image_size: int) -> str | None:
    """The registered CIFAR-stem model to build for `torchvision:NAME` on small images, if any."""
    if kind_of(source) == "torchvision" and image_size <= SMALL_IMAGE:
        return CIFAR_STEM_VARIANTS.get(source[len(TORCHVISION):])
    return None
