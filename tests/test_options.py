"""One vocabulary of options: the renamed ones, under their old names, still parse to the same
value, with a notice naming the new name; the new names are what help shows."""
import pytest

from compress.cli import build_parser

RENAMED = [  # (command line with the old name, with the new name, attribute)
    (["sweep", "m.pt", "--tolerance", "2"], ["sweep", "m.pt", "--max-drop", "2"], "max_drop"),
    (["sweep", "m.pt", "--criteria", "magnitude,taylor"], ["sweep", "m.pt", "--criterion", "magnitude,taylor"], "criteria"),
    (["plan", "d.pt", "--speedup", "2", "--at-batch", "8"], ["plan", "d.pt", "--speedup", "2", "--latency-batch", "8"], "latency_batch"),
    (["plan", "d.pt", "--speedup", "2", "--tolerance", "0.1"], ["plan", "d.pt", "--speedup", "2", "--speedup-tolerance", "0.1"],
     "speedup_tolerance"),
    (["filter", "--speedup", "2", "--at-batch", "8"], ["filter", "--speedup", "2", "--latency-batch", "8"], "latency_batch"),
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
    assert args.latency_batch == 64 and args.speedup_tolerance == 0.05
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
