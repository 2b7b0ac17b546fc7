"""Shipped layer-ratio files, installed as the package data `compress.configs` (see
pyproject.toml), so a wheel install finds them with importlib.resources like a source checkout."""
