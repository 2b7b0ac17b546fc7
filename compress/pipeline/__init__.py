"""A run, as a library a notebook can call: options in, a finished run folder out.

    from compress.pipeline import PruneOptions, run_prune
    manifest = run_prune(PruneOptions(kind="filter", ratio=0.4, method="imp", rounds=3), data, device)

`run` resolves the dense baseline and the layer ratios, prunes (OMP/IMP) and strings the
deployment `stages` together (slim, export, quantize, bench, report), each recorded in the run's
manifest; `seeds` repeats a run per seed and summarises over seeds. The command line (compress.cli)
only parses options into these and prints what comes back.

`options` (what a run takes, torch-free) is what the command line builds its parser from; the
rest imports torch, so it is loaded when first used, not when the parser is built.
"""
from compress.pipeline.options import PruneOptions, SuiteOptions

__all__ = ["PruneOptions", "SuiteOptions", "resolve_dense", "resolve_ratios", "run_all", "run_prune", "seeds_root"]


def __getattr__(name: str):
    if name in __all__:
        from compress.pipeline import run

        return getattr(run, name)
    raise AttributeError(f"module 'compress.pipeline' has no attribute {name!r}")
