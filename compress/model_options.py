"""The model options of every command that builds a model, declared once (`ModelOptions`).
Torch-free, like the other options modules, so building the parser imports no torch."""
from __future__ import annotations

from dataclasses import dataclass

from compress.options import number, number_list, option


@dataclass(frozen=True)
class ModelOptions:
    """Which model a command builds and what it expects; a command offers the ones it uses
    (`compress.cli.args.add_model_args`), and `compress.cli.args.model_source` checks the source
    before any data is read."""

    model: str | None = option(None, "--model", "a registered name (`compress models`), torchvision:NAME (any "
                               "torchvision classifier, random init), timm:NAME (any timm model; needs timm), "
                               "FILE.py:CALLABLE or package.module:CALLABLE returning an nn.Module", metavar="SOURCE",
                               default_text="the checkpoint's own model, else vgg13")
    model_arg: tuple[str, ...] = option((), "--model-arg", "keyword argument for the model's builder, a YAML scalar "
                                        "(repeatable)", metavar="KEY=VALUE", repeat=True)
    width: float = option(1.0, "--width", "channel width multiplier of registered models (0.125: the tests' tiny ones)",
                          parse=number, metavar="W")
    mean: tuple[float, ...] | None = option(None, "--mean", "input normalisation the model expects, per channel in "
                                            "[0, 1] units", parse=number_list, metavar="R,G,B",
                                            default_text="the data's own")
    std: tuple[float, ...] | None = option(None, "--std", "see --mean", parse=number_list, metavar="R,G,B",
                                           default_text="the data's own")
    trust_pickle: bool = option(False, "--trust-pickle", "allow --checkpoint to be a whole pickled module "
                                "(torch.save(model, f)); unpickling runs code from the file, so only for files you "
                                "trust. Recorded in the manifest")
