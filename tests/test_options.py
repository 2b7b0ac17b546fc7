"""One vocabulary of options: the renamed ones, under their old names, still parse to the same
value, with a notice naming the new name; the new names are what help shows."""
import pytest

from compress.cli import build_parser

RENAMED = [  # (command line with the old name, with the new name, attribute)
    (["sweep", "m.pt", "--tolerance", "2"], ["sweep", "m.pt", "--max-drop", "2"], "max_drop"),
    (["sweep", "m.pt", "--criteria", "magnitude,taylor"], ["sweep", "m.pt", "--criterion", "magnitude,taylor"], "criteria"),
    (["plan", "d.pt", "--speedup", "2", "--at-batch", "8"], ["plan", "d.pt", "--speedup", "2", "--latency-batch", "8"], "batch"),
    (["plan", "d.pt", "--speedup", "2", "--tolerance", "0.1"], ["plan", "d.pt", "--speedup", "2", "--speedup-tolerance", "0.1"],
     "tolerance"),
    (["filter", "--speedup", "2", "--at-batch", "8"], ["filter", "--speedup", "2", "--latency-batch", "8"], "batch"),
]


@pytest.mark.parametrize("old,new,attr", RENAMED, ids=[" ".join(r[0][:1] + r[0][-2:-1]) for r in RENAMED])
def test_an_old_name_still_works_and_says_the_new_one(old, new, attr, capsys):
    parser = build_parser()
    by_new = getattr(parser.parse_args(new), attr)
    assert capsys.readouterr().err == ""
    assert getattr(parser.parse_args(old), attr) == by_new
    said = " ".join(capsys.readouterr().err.split())
    assert f"{old[-2]} is now {new[-2]}" in said


@pytest.mark.parametrize("command,old", [("sweep", "--tolerance"), ("sweep", "--criteria"), ("plan", "--at-batch"),
                                         ("plan", "--tolerance"), ("compare", "--split")])
def test_help_shows_only_the_new_names(command, old, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert old not in capsys.readouterr().out


def test_defaults_apply_when_the_option_is_absent():
    args = build_parser().parse_args(["plan", "d.pt", "--speedup", "2"])
    assert args.batch == 64 and args.tolerance == 0.05
    from compress.analysis.options import SweepOptions
    from compress.options import from_args

    assert from_args(SweepOptions, build_parser().parse_args(["sweep", "m.pt"])).criteria == ("magnitude",)


def test_every_default_is_shown_in_help():
    """An option with a default says it in its help ("default ..."), so `--help` answers what a
    run will do without reading the code."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    silent = [(name, a.option_strings[0], a.default) for name, sub in commands.items() for a in sub._actions
              if a.option_strings and a.help != argparse.SUPPRESS and a.default not in (None, False, argparse.SUPPRESS, [], ())
              and not isinstance(a, argparse._StoreConstAction)  # flags (store_true/false): off unless given
              and "default" not in (a.help or "")]
    assert silent == []


def test_help_lists_the_commands_in_workflow_order(capsys):
    from compress.cli import WORKFLOW

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    where = [text.index(f"    {name}") for name in WORKFLOW]
    assert where == sorted(where) and "Under torchrun" in " ".join(text.split())


@pytest.mark.parametrize("command,cls", [("sweep", "SweepOptions"), ("sensitivity", "SensitivityOptions")])
def test_options_declared_once_build_the_cli(command, cls, capsys):
    """sweep's and sensitivity's arguments are built from their options dataclasses: with no option
    given the CLI yields the dataclass's defaults, help says each of them, every option given
    reaches its field, and a default changed in the dataclass changes the CLI."""
    import argparse
    import dataclasses

    from compress.analysis import options
    from compress.options import add_options, from_args

    klass = getattr(options, cls)
    parser = build_parser()
    assert from_args(klass, parser.parse_args([command, "m.pt"])) == klass()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    declared = [f for f in dataclasses.fields(klass) if "compress.option" in f.metadata]
    for f in declared:
        meta = f.metadata["compress.option"]
        assert meta["flag"] in text and " ".join(meta["help"].split()[:3]) in text, f.name
    argv = [command, "m.pt", "--kind", "filter", "--recalibrate-bn", "3", "--criterion", "taylor"]
    opts = from_args(klass, parser.parse_args(argv))
    assert opts.kind == "filter" and opts.recalibrate_bn == 3
    assert (opts.criteria if command == "sweep" else opts.criterion) == (("taylor",) if command == "sweep" else "taylor")
    changed = dataclasses.make_dataclass("Changed", [(f.name, f.type, dataclasses.field(
        default=7 if f.name == "recalibrate_bn" else f.default, metadata=f.metadata)) for f in declared])
    p = argparse.ArgumentParser()
    add_options(p, changed)
    assert p.parse_args([]).recalibrate_bn == 7 and "(default 7)" in p.format_help()


PRUNE_COMMANDS = {  # command: the PruneOptions fields it offers (the rest do not apply to it)
    "unstructured": ("ratio", "config", "allocation", "criterion", "schedule", "rewind", "max_drop"),
    "filter": ("ratio", "config", "allocation", "round_to", "criterion", "schedule", "rewind", "max_drop"),
    "nm": ("nm", "criterion", "rewind", "max_drop"),
    "all": ("allocation", "round_to", "criterion", "schedule", "rewind", "max_drop"),
}


@pytest.mark.parametrize("command", PRUNE_COMMANDS)
def test_prune_commands_are_built_from_prune_options(command, capsys):
    """The prune commands and `compress all` take their pruning options from PruneOptions (and
    `all` its ratios and rounds from SuiteOptions): absent, each is the dataclass's default; help
    says it; given, it reaches its field; an option that does not apply is not offered."""
    import dataclasses

    from compress.options import from_args
    from compress.pipeline import PruneOptions, SuiteOptions

    parser = build_parser()
    kind = "" if command == "all" else command
    opts = from_args(PruneOptions, parser.parse_args([command]), kind=kind, dense=None, retrain=None)
    assert opts == PruneOptions(kind=kind, dense=None, retrain=None)
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(PruneOptions):
        meta = f.metadata.get("compress.option")
        if meta is None:
            continue
        offered = f" {meta['flag']} " in text
        assert offered == (f.name in PRUNE_COMMANDS[command]), (command, f.name)
        if offered:
            assert " ".join(meta["help"].split()[:3]) in text, f.name
    given = {"ratio": ("--ratio", "0.5", 0.5), "allocation": ("--allocation", "global", "global"),
             "round_to": ("--round-to", "8", 8), "criterion": ("--criterion", "taylor", "taylor"),
             "schedule": ("--schedule", "linear", "linear"), "rewind": ("--rewind", "weights", "weights"),
             "nm": ("--nm", "1:4", (1, 4)), "max_drop": ("--max-drop", "0.5", 0.5)}
    argv = [command] + [w for name in PRUNE_COMMANDS[command] if name in given for w in given[name][:2]]
    opts = from_args(PruneOptions, parser.parse_args(argv), kind=kind, dense=None, retrain=None)
    for name in PRUNE_COMMANDS[command]:
        if name in given:
            assert getattr(opts, name) == given[name][2], name
    if command == "all":
        assert from_args(SuiteOptions, parser.parse_args(["all"])) == SuiteOptions()
        suite = from_args(SuiteOptions, parser.parse_args(["all", "--filter-ratio", "0.6", "--imp", "5"]))
        assert suite.ratios == {"unstructured": 0.8, "filter": 0.6} and suite.imp == 5


@pytest.mark.parametrize("command", ["train", "filter", "all"])
def test_training_options_are_built_from_train_overrides(command, capsys):
    """--epochs, --lr, --batch-size, --seed and --precision come from TrainOverrides: absent, the
    command trains with its recipe as it is; help says each; given, each replaces its one number."""
    import dataclasses

    from compress.cli.args import train_config
    from compress.presets import RETRAIN
    from compress.train_config import TrainOverrides

    parser = build_parser()
    assert train_config(parser.parse_args([command]), RETRAIN) == RETRAIN
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainOverrides):
        meta = f.metadata["compress.option"]
        assert f" {meta['flag']} " in text and " ".join(meta["help"].split()[:3]) in text, f.name
    argv = [command, "--epochs", "3", "--lr", "0.02", "--batch-size", "32", "--seed", "7", "--precision", "fp32"]
    changed = train_config(parser.parse_args(argv), RETRAIN)
    assert changed == dataclasses.replace(RETRAIN, epochs=3, lr=0.02, batch_size=32, seed=7, precision="fp32")
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err


DATA_OPTIONS = {  # command: the DataOptions fields it offers
    "train": ("data", "image_size", "val_split", "val_data", "stream", "workers", "device"),
    "export": ("data",),
    "quantize": ("data", "val_split", "val_data"),
}


@pytest.mark.parametrize("command", DATA_OPTIONS)
def test_data_options_are_built_from_data_options(command, capsys):
    """The data and device options come from DataOptions: absent, its defaults; help offers the
    ones the command uses and no other; given, each reaches its field; a bad one is refused."""
    import dataclasses

    from compress.cli.args import data_options
    from compress.data_options import DataOptions

    parser = build_parser()
    positional = [] if command == "train" else ["m.pt"]
    assert data_options(parser.parse_args([command, *positional])) == DataOptions()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(DataOptions):
        assert (f" {f.metadata['compress.option']['flag']} " in text) == (f.name in DATA_OPTIONS[command]), f.name
    given = {"data": ("--data", "sample", "sample"), "image_size": ("--image-size", "48", 48),
             "val_split": ("--val-split", "0.2", 0.2), "val_data": ("--val-data", "imagefolder:v", "imagefolder:v"),
             "stream": ("--stream", None, True), "workers": ("--workers", "3", 3), "device": ("--device", "cpu", "cpu")}
    argv = [command, *positional] + [w for name in DATA_OPTIONS[command] for w in given[name][:2] if w is not None]
    opts = data_options(parser.parse_args(argv))
    assert all(getattr(opts, name) == given[name][2] for name in DATA_OPTIONS[command])
    bad = ["--val-split", "0.9"] if "val_split" in DATA_OPTIONS[command] else ["--val-split", "0.1"]
    with pytest.raises(SystemExit):
        parser.parse_args([command, *positional, *bad])
    assert ("outside [0, 0.5]" if "val_split" in DATA_OPTIONS[command] else "unrecognized") in capsys.readouterr().err


MODEL_OPTIONS = {  # command: the ModelOptions fields it offers
    "train": ("model", "model_arg", "width", "mean", "std"),
    "filter": ("model", "model_arg", "width", "mean", "std", "trust_pickle"),
    "layers": ("model", "model_arg", "width", "trust_pickle"),
}


@pytest.mark.parametrize("command", MODEL_OPTIONS)
def test_model_options_are_built_from_model_options(command, capsys):
    """The model options come from ModelOptions: absent, its defaults; help offers the ones the
    command uses and no other; given (--model-arg twice), each reaches its field."""
    import dataclasses

    from compress.cli.args import model_options
    from compress.model_options import ModelOptions

    parser = build_parser()
    assert model_options(parser.parse_args([command])) == ModelOptions()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(ModelOptions):
        assert (f" {f.metadata['compress.option']['flag']} " in text) == (f.name in MODEL_OPTIONS[command]), f.name
    given = {"model": ["--model", "torchvision:resnet18"], "model_arg": ["--model-arg", "a=1", "--model-arg", "b=x"],
             "width": ["--width", "0.5"], "mean": ["--mean", "0.5,0.4,0.3"], "std": ["--std", "0.2,0.2,0.2"],
             "trust_pickle": ["--trust-pickle"]}
    opts = model_options(parser.parse_args([command] + [w for name in MODEL_OPTIONS[command] for w in given[name]]))
    expected = dict(model="torchvision:resnet18", model_arg=("a=1", "b=x"), width=0.5, mean=(0.5, 0.4, 0.3),
                    std=(0.2, 0.2, 0.2), trust_pickle=True)
    assert opts == ModelOptions(**{name: expected[name] for name in MODEL_OPTIONS[command]})


@pytest.mark.parametrize("argv,match", [
    (["nm", "--nm", "4:2"], "0 < N < M"), (["nm", "--nm", "two:four"], "is not N:M"),
    (["filter", "--round-to", "-1"], "must be >= 0"), (["all", "--imp", "0"], "positive integer"),
    (["all", "--filter-ratio", "1"], "must be in \\[0, 1\\)"),
])
def test_prune_options_refuse_bad_values_at_parse_time(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    import re

    assert re.search(match, capsys.readouterr().err)


def test_building_the_prune_parser_imports_no_torch():
    """PruneOptions lives in a torch-free module, so `compress filter --help` stays instant."""
    import subprocess
    import sys

    code = ("import sys; from compress.cli import build_parser; build_parser().parse_args(['filter', '--ratio', '0.4']);"
            "import compress.pipeline; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_the_cli_reference_is_current():
    """docs/cli.md is written from the parser; an option changed without regenerating it fails here."""
    from pathlib import Path

    from compress.cli.reference import markdown

    committed = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert committed == markdown(build_parser()), "docs/cli.md is stale: python -m compress.cli.reference > docs/cli.md"
