"""``featpipe backbones``: the registry as a table, and where ImageNet weights live."""

import click

from features.backbones import PREPROCESSING_MODES, get_backbone, list_backbones
from features.weights import keras_cache_dir


@click.command()
def backbones():
    """List the backbones extract knows: input size, preprocessing, layers and dimensions."""
    click.echo(format_table())


def format_table():
    """The registry as aligned text, then the preprocessing modes and the ImageNet weights files."""
    entries = [get_backbone(name) for name in list_backbones()]
    lines = _aligned(
        ("name", "input", "preprocessing", "layers (dimension), default first", "about"),
        [_row(entry) for entry in entries],
    )
    lines += ["", "preprocessing (after a bilinear resize to the input size):"]
    lines += [f"  {text}" for text in PREPROCESSING_MODES.values()]
    lines += ["", f"--weights imagenet reads these files from {keras_cache_dir()}/ (downloading them if it can):"]
    for entry in entries:
        cached = (keras_cache_dir() / entry.imagenet_file).exists()
        lines.append(f"  {entry.name:<16} {entry.imagenet_file} ({'cached' if cached else 'not cached'})")
    lines += ["", "Your own model: --backbone path/to/model.keras --layer NAME (resized, no other preprocessing)."]
    return "\n".join(lines)


def _row(entry):
    layers = sorted(entry.layers.items(), key=lambda item: item[0] != entry.default_layer)
    return (
        entry.name,
        "x".join(map(str, entry.input_size)),
        entry.preprocessing,
        ", ".join(f"{name} ({tap.dim})" for name, tap in layers),
        entry.description,
    )


def _aligned(header, rows):
    rows = [header] + rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines
