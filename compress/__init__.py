"""compress: prune CNNs, remove what was pruned, export slim ONNX models, and measure them.

The library behind the `compress` command; each subcommand is one call into it.
"""
__version__ = "0.1.0"
