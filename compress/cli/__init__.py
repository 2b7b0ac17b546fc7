"""The `compress` command: argument parsing and printing only; every subcommand calls the library.

Errors a user can fix are `CompressError`s: one line on stderr, exit code 2. `--debug` shows
the traceback. The subcommands live in the modules of COMMAND_MODULES (registered with
`base.command` on import); their shared options in `args`.
"""
from __future__ import annotations

import argparse
import os
import sys

from compress.cli.base import COMMANDS, Parser
from compress.console import err, out
from compress.errors import CompressError

DATA_PARALLEL = ("train", "unstructured", "filter", "nm", "all", "sweep", "sensitivity")  # the commands that run under torchrun
# imported to register their subcommands, in the order `compress --help` lists them
COMMAND_MODULES = ("compress.cli.train", "compress.cli.prune", "compress.cli.deploy", "compress.cli.analysis",
                   "compress.cli.model", "compress.cli.plan")


# the order `compress --help` lists the commands in: a workflow top to bottom
WORKFLOW = ("models", "layers", "import", "train",          # the model
            "sweep", "sensitivity", "plan",                 # analyse it
            "unstructured", "filter", "nm", "all",          # prune it
            "slim", "export", "quantize", "bench",          # deploy it
            "sparsity", "compare", "report")                # inspect what came out


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from compress import __version__

    for module in COMMAND_MODULES:
        importlib.import_module(module)

    parser = Parser(
        prog="compress",
        description="Prune CNNs, physically remove what was pruned, export slim ONNX models and measure them.",
        epilog="Commands are listed in the order of a workflow: know the model, train or import it, analyse, "
               "prune, deploy, inspect. Under torchrun (`torchrun --nproc_per_node N -m compress ...`): "
               f"{', '.join(DATA_PARALLEL)}. Run `compress COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"compress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    missing = set(COMMANDS) - set(WORKFLOW)
    assert not missing, f"commands without a place in WORKFLOW: {sorted(missing)}"
    for name in WORKFLOW:
        cmd = COMMANDS[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        p.add_argument("--trust-code", action="store_true",
                       help="let a model source recorded in a file (a checkpoint's FILE.py:CALLABLE or "
                            "package.module:CALLABLE) be imported, which runs its code; without it only the source "
                            "you name with --model is. Recorded in the manifest")
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return int(e.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    args.argv = ["compress", *(sys.argv[1:] if argv is None else argv)]
    from compress import distributed

    if distributed.launched() and args.command not in DATA_PARALLEL:
        err.print(f"[bold red]error:[/bold red] `compress {args.command}` does not run under torchrun yet; "
                  f"run it as one process (data-parallel so far: {', '.join(DATA_PARALLEL)})", soft_wrap=True)
        return 2
    allow_named_code(args)
    rank = int(os.environ.get("RANK", "0"))
    if rank:  # under torchrun rank 0 speaks for all; the others only report their own errors
        out.quiet = err.quiet = True
    try:
        return COMMANDS[args.command].run(args) or 0
    except CompressError as e:
        if args.debug:
            raise
        if rank:
            print(f"error: (rank {rank}) {e}", file=sys.stderr)
        else:
            err.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; finished files are intact, unfinished ones were not written")
        return 130
    except RuntimeError as e:
        if not distributed.launched() or args.debug:
            raise
        print(f"error: (rank {rank}) the process group failed: {str(e).splitlines()[0]}; the other ranks stop "
              f"too (within {distributed.TIMEOUT_S} s at most, COMPRESS_DIST_TIMEOUT)", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()


def allow_named_code(args: argparse.Namespace) -> None:
    """Code sources may run only when named here: --model (this command's own choice), or all of
    them with --trust-code (see compress.models.sources)."""
    from compress.models import sources

    sources.reset_code_trust()  # each command decides for itself (main may run several times in one process)
    sources.trust_code(bool(getattr(args, "trust_code", False)))
    model = getattr(args, "model", None)
    if isinstance(model, str):
        sources.allow_code(model)


if __name__ == "__main__":
    sys.exit(main())
