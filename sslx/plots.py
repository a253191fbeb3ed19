"""The pictures people look at, drawn from arrays into PNG files (local or remote).

Each function takes what it draws as numpy arrays and writes one PNG: a 2-D map
of embeddings coloured by label (t-SNE, UMAP), a retrieval grid (each query and
its nearest neighbours), self-attention maps of the class token per head,
masked-image reconstructions, and the training curves of a run's `metrics.jsonl`.
Matplotlib draws off-screen (its Agg canvas), so they run on machines without a
display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from sslx import fs

DPI = 100


def save(figure: Figure, path: str) -> str:
    """Writes `figure` as a PNG at `path` (local or remote); returns `path`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    fs.write(path, buffer.getvalue())
    return path


def embedding_map(points: np.ndarray, labels: np.ndarray, path: str, title: str,
                  class_names: Sequence[str] | None = None) -> str:
    """Points [N, 2] (a t-SNE or UMAP of embeddings) coloured by label [N] (-1:
    unlabelled, grey), with a legend of the classes."""
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    colours = figure_colours(max(int(labels.max(initial=-1)) + 1, 1))
    unlabelled = labels < 0
    if unlabelled.any():
        axes.scatter(*points[unlabelled].T, s=4, color="0.6", label="unlabelled")
    for label in np.unique(labels[~unlabelled]):
        name = class_names[label] if class_names else str(label)
        axes.scatter(*points[labels == label].T, s=4, color=colours[label], label=name)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5),
                frameon=False)
    figure.tight_layout()
    return save(figure, path)


def retrieval_grid(queries: np.ndarray, neighbours: np.ndarray, match: np.ndarray,
                   path: str, title: str) -> str:
    """One row per query: the query image (uint8 [Q, H, W, 3]), then its nearest
    neighbours (uint8 [Q, K, H, W, 3]) framed green where `match` [Q, K] (same
    label as the query) and red elsewhere."""
    rows, k = neighbours.shape[:2]
    figure = Figure(figsize=(1.1 * (k + 1), 1.1 * rows + 0.4))
    grid = figure.subplots(rows, k + 1, squeeze=False)
    for row in range(rows):
        _image(grid[row, 0], queries[row], "black")
        for column in range(k):
            _image(grid[row, column + 1], neighbours[row, column],
                   "tab:green" if match[row, column] else "tab:red")
    grid[0, 0].set_title("query", fontsize=8)
    for column in range(k):
        grid[0, column + 1].set_title(f"{column + 1}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


def attention_maps(images: np.ndarray, maps: np.ndarray, path: str, title: str) -> str:
    """One row per image (uint8 [B, H, W, 3]): the image, then the class token's
    attention to the patches for each head (maps [B, heads, h, w]), each head's
    map scaled to its own range and drawn over the image's grid."""
    rows, heads = maps.shape[:2]
    figure = Figure(figsize=(1.1 * (heads + 1), 1.1 * rows + 0.4))
    grid = figure.subplots(rows, heads + 1, squeeze=False)
    height, width = images.shape[1:3]
    for row in range(rows):
        _image(grid[row, 0], images[row], None)
        for head in range(heads):
            axes = grid[row, head + 1]
            axes.imshow(maps[row, head], cmap="inferno", extent=(0, width, height, 0),
                        interpolation="nearest")
            axes.set_axis_off()
    for head in range(heads):
        grid[0, head + 1].set_title(f"head {head}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


def reconstructions(masked: np.ndarray, predicted: np.ndarray, pasted: np.ndarray,
                    originals: np.ndarray, path: str, title: str) -> str:
    """One row per image (each uint8 [B, H, W, 3]): the masked input, the prediction of
    every patch, the prediction with the visible patches pasted back, the original."""
    columns = {"masked input": masked, "reconstruction": predicted,
               "reconstruction + visible": pasted, "original": originals}
    rows = len(originals)
    figure = Figure(figsize=(1.6 * len(columns), 1.5 * rows + 0.5))
    grid = figure.subplots(rows, len(columns), squeeze=False)
    for column, (name, images) in enumerate(columns.items()):
        grid[0, column].set_title(name, fontsize=8)
        for row in range(rows):
            _image(grid[row, column], images[row], None)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


def training_curves(records: Sequence[dict], path: str, title: str) -> str:
    """One panel per figure of a run's `metrics.jsonl` records that changes along
    training: the loss, the learning rate and every evaluator metric (k-NN, probe,
    collapse monitors), each against the step."""
    names = curve_names(records)
    columns = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(4 * columns, 3 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    last = max((record["step"] for record in records), default=1)
    for axes, name in zip(grid.flat, names, strict=False):
        steps, values = zip(*[(r["step"], r[name]) for r in records if name in r], strict=True)
        axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3)
        axes.set_xlim(0, last * 1.03)  # every panel on the run's steps
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(names):]:
        axes.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path)


# Throughput and timing figures of the log; not what the curves are for.
_NOT_CURVES = {"step", "images_per_sec", "step_time", "input_wait", "grad_norm"}


def curve_names(records: Sequence[dict]) -> list[str]:
    """The figures `training_curves` draws: loss and lr first, then the others by name."""
    names = {name for record in records for name, value in record.items()
             if name not in _NOT_CURVES and isinstance(value, (int, float))}
    first = [name for name in ("loss", "lr") if name in names]
    return first + sorted(names - set(first))


def figure_colours(count: int) -> list[tuple[float, ...]]:
    """`count` distinct colours (tab10, then tab20, then a continuous map)."""
    from matplotlib import colormaps

    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"
    cmap = colormaps[name]
    return [cmap(i if count <= 20 else i / max(count - 1, 1)) for i in range(count)]


def _image(axes, image: np.ndarray, frame: str | None) -> None:
    axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_color(frame)
            spine.set_linewidth(2.5)
