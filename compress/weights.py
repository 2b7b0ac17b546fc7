"""Weights the user already has, in the formats public training scripts write.

Accepted, always without running code from the file (`weights_only=True`):
- a plain state dict (`torch.save(model.state_dict(), f)`; .pt, .pth, .bin, ...);
- a nested dict with the state dict under some key (`state_dict`, `model`, `net`, ...) beside
  unrelated entries (`epoch`, `optimizer`, ...): the entry that fits the model is taken;
- keys prefixed by DataParallel/DDP (`module.`), torch.compile (`_orig_mod.`) or a wrapper
  (`model.`, `net.`): the prefix is stripped when the model has no such prefix;
- `.safetensors` files.
A whole pickled module (`torch.save(model, f)`) loads only with `trust_pickle=True`: unpickling
runs code from the file.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from compress.errors import CompressError

PREFIXES = ("module.", "_orig_mod.")
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "model_state", "network", "ema")
PICKLE_HINT = ("loading it would run code stored in the file. Either save the weights with "
               "torch.save(model.state_dict(), path) and pass --model for the architecture, or, if you trust "
               "the file, pass --trust-pickle")


@dataclass
class ForeignWeights:
    """A state dict that fits the model, and what was done to find it (said in the output)."""

    state_dict: dict[str, torch.Tensor]
    found: str  # where the state dict was: "top level", "under 'state_dict'", ...
    ignored: list[str] = field(default_factory=list)  # other top-level entries
    stripped: list[str] = field(default_factory=list)  # prefixes removed from the keys
    pickled_module: bool = False  # came from a whole pickled module (--trust-pickle)

    def describe(self) -> str:
        parts = [f"state dict {self.found} ({len(self.state_dict)} tensors)"]
        if self.stripped:
            parts.append("prefix " + ", ".join(repr(p) for p in self.stripped) + " stripped")
        if self.ignored:
            parts.append("ignored " + ", ".join(repr(k) for k in self.ignored[:8]) + ("…" if len(self.ignored) > 8 else ""))
        if self.pickled_module:
            parts.append("unpickled from a whole module (--trust-pickle)")
        return "; ".join(parts)


def read_raw(path: Path, *, trust_pickle: bool = False):
    """The object in a weights file, read safely; every failure is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"weights file {path} does not exist", "check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CompressError(f"{path} is not a readable safetensors file ({str(e)[:100]})",
                                "the file is truncated or corrupt; save it again") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if not found:
            raise CompressError(f"{path} is not a readable PyTorch file (unpickling failed)",
                                "the file is truncated or corrupt; save it again") from None
        if not trust_pickle:
            raise CompressError(f"{path} holds pickled Python objects (it names the class {found.group(1)}), "
                                "not plain weights", PICKLE_HINT) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as e:
        raise CompressError(f"{path} is not a readable PyTorch file ({_first_line(e)})",
                            "the file is truncated or corrupt; save it again") from None
    try:  # trust_pickle: the user said the file is theirs
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CompressError(f"{path} could not be unpickled ({type(e).__name__}: {_first_line(e)})",
                            "the classes it names must be importable here; saving a state dict avoids this") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:140]


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and \
        sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def _candidates(obj, where: str = "at the top level", depth: int = 0):
    """(location, dict of tensors) for every plausible state dict inside `obj`."""
    if isinstance(obj, nn.Module):
        yield "in the pickled module", obj.state_dict()
        return
    if not isinstance(obj, dict):
        return
    if _is_state_dict(obj):
        yield where, {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if depth < 2:
        keys = sorted(obj, key=lambda k: (k not in STATE_KEYS, STATE_KEYS.index(k) if k in STATE_KEYS else 0))
        for k in keys:
            if isinstance(obj[k], (dict, nn.Module)):
                yield from _candidates(obj[k], f"under {k!r}" if depth == 0 else f"{where[:-1]} -> {k!r}", depth + 1)


def strip_prefixes(state: dict, wanted: set[str]) -> tuple[dict, list[str]]:
    """Remove `module.` / `_orig_mod.` (and a shared wrapper prefix such as `model.`) when the
    model's own names do not carry them."""
    stripped = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state and all(k.startswith(prefix) for k in state) and not any(w.startswith(prefix) for w in wanted):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) == 1 and all("." in k for k in state):
            head = next(iter(heads)) + "."
            if not any(w.startswith(head) for w in wanted):
                state = {k[len(head):]: v for k, v in state.items()}
                stripped.append(head)
                changed = True
    return state, stripped


def fit_report(model_state: dict, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape) keys of `state` against the model's own state dict."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    wrong = [k for k in model_state if k in state and tuple(model_state[k].shape) != tuple(state[k].shape)]
    return missing, unexpected, wrong


def find_weights(obj, model: nn.Module, path: Path | str = "the file") -> ForeignWeights:
    """The state dict inside `obj` that fits `model` best; an error naming keys when none fits."""
    own = model.state_dict()
    best = None
    for where, cand in _candidates(obj):
        state, stripped = strip_prefixes(cand, set(own))
        missing, unexpected, wrong = fit_report(own, state)
        score = (len(missing) + len(unexpected) + len(wrong), -len(state))
        if best is None or score < best[0]:
            best = (score, where, state, stripped, (missing, unexpected, wrong))
    if best is None:
        what = type(obj).__name__
        raise CompressError(f"{path} holds no state dict (found a {what})",
                            "save the weights with torch.save(model.state_dict(), path)")
    _, where, state, stripped, (missing, unexpected, wrong) = best
    if missing or unexpected or wrong:
        raise CompressError(f"the weights in {path} do not fit the model ({mismatch_detail(own, state, missing, unexpected, wrong)})",
                            likely_cause(own, state, missing, unexpected, wrong))
    ignored = [str(k) for k in obj if f"under {k!r}" != where] if isinstance(obj, dict) and where != "at the top level" else []
    return ForeignWeights(state, where, ignored, stripped, pickled_module=isinstance(obj, nn.Module))


def mismatch_detail(own: dict, state: dict, missing, unexpected, wrong) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
    if wrong:
        parts.append(f"{len(wrong)} of another shape, e.g. " + ", ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:2]))
    return "; ".join(parts)


def likely_cause(own: dict, state: dict, missing, unexpected, wrong) -> str:
    """Another number of classes, another width, or another architecture."""
    if not missing and not unexpected and wrong:
        last = [k for k in own if own[k].ndim >= 1][-2:]
        if set(wrong) <= set(last) and all(own[k].shape[0] != state[k].shape[0] for k in wrong):
            n = state[wrong[0]].shape[0]
            return f"only the classifier differs: the weights predict {n} classes; pass the data they were trained on"
        ratios = {round(a / b, 3) for k in wrong if state[k].ndim == own[k].ndim
                  for a, b in zip(state[k].shape, own[k].shape) if a != b and b}
        if len(ratios) == 1:
            return f"every layer is {next(iter(ratios)):g}x as wide: pass the matching --width or --model-arg"
    return "they were saved from another architecture: pass the --model (and --model-arg) they were trained with"
