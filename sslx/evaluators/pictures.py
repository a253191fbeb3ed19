"""Pictures of a train state, as PNG files in `WORKDIR/plots/` (`sslx.plots` draws them).

From the first `max_examples` images of the eval split: a t-SNE map of their
embeddings coloured by label (and a UMAP one where `umap-learn` is installed:
`pip install -e '.[umap]'`), a retrieval grid (queries and their nearest
neighbours by cosine similarity among those images), and for ViT backbones the
class token's self-attention in the last block, per head, as DINO shows it.
Then the training curves of `WORKDIR/metrics.jsonl`. Each file is named
`<picture>_step<step>.png`, so pictures taken during training do not overwrite
one another.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import ml_collections
import numpy as np

from sslx import fs
from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator

log = logging.getLogger("sslx")


def nearest_neighbours(features: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows [Q, K] of `features` [N, D] most cosine-similar to rows `queries` [Q] of
    the same array, most similar first, the query itself left out."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit[queries] @ unit.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def spread_queries(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` row indices, one per class in turn (labelled rows), else drawn at random."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    if not len(classes):
        return np.sort(rng.choice(len(labels), size=min(count, len(labels)), replace=False))
    chosen = [rng.choice(np.flatnonzero(labels == classes[i % len(classes)]))
              for i in range(min(count, len(labels)))]
    return np.asarray(chosen)


def attention_of_class_token(backbone: Any, variables: Any, images: np.ndarray) -> np.ndarray:
    """The class token's attention to the patches in the ViT `backbone`'s last block,
    [B, heads, h, w], for normalised images [B, S, S, 3]."""
    _, sown = backbone.apply(variables, images, train=False, sow_attention=True,
                             mutable=["intermediates"])
    weights = sown["intermediates"][f"block{backbone.depth - 1}"]["attn"]["attention_weights"]
    weights = np.asarray(weights[0], np.float32)  # [B, heads, T, T]
    grid = (images.shape[1] // backbone.patch_size, images.shape[2] // backbone.patch_size)
    return weights[:, :, 0, 1:].reshape(*weights.shape[:2], *grid)


def two_dimensional(features: np.ndarray, kind: str, seed: int = 0) -> np.ndarray | None:
    """A 2-D map [N, 2] of `features` by `kind` ('tsne' or 'umap'); None for 'umap'
    when umap-learn is not installed."""
    if kind == "umap":
        try:
            import umap
        except ImportError:
            return None
        return umap.UMAP(random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


@register("pictures", defaults=dict(
    max_examples=2000,     # eval-split images embedded for the maps and the grid
    maps=("tsne", "umap"),  # 2-D maps drawn ('umap' needs umap-learn)
    queries=6,             # rows of the retrieval grid (0: none)
    neighbours=8,          # neighbours shown per query
    attention_images=4,    # images of the attention maps (ViT backbones; 0: none)
    curves=True,           # the training curves of metrics.jsonl
))
class Pictures(Evaluator):
    """No metrics: writes PNGs (one log line lists them). Process 0 draws."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_split  # imports TensorFlow

        super().__init__(name, config, run)
        where = f"config.evals.{name}"
        unknown = set(config.maps) - {"tsne", "umap"}
        if unknown:
            raise ConfigError(f"{where}.maps={tuple(config.maps)!r} names {sorted(unknown)}; "
                              "choose from 'tsne', 'umap'")
        for field, least in (("max_examples", 2), ("queries", 0), ("neighbours", 1),
                             ("attention_images", 0)):
            if not (isinstance(config[field], int) and config[field] >= least):
                raise ConfigError(f"{where}.{field}={config[field]!r} must be an integer "
                                  f">= {least}")
        check_split(run.config, run.config.data.eval_split, "config.data.eval_split",
                    f"--config.evals.{name}.enabled=False")

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx import plots  # imports matplotlib
        from sslx.evaluators.embed import embed_examples

        run, step = self.run, int(state.step)
        features, labels, images = embed_examples(
            run.method, state.params, state.method_state, run.config, run.config.data.eval_split,
            run.mesh, self.config.max_examples)
        attention = self._attention(state, images)
        if jax.process_index() != 0:
            return {}
        directory = fs.join(run.workdir, "plots")
        fs.makedirs(directory)
        name = f"{run.config.method.name} step {step}, {run.config.data.eval_split} split"
        written = []
        for kind in self.config.maps:
            points = two_dimensional(features, kind)
            if points is None:
                log.info("%s: no UMAP map: umap-learn is not installed (pip install -e "
                         "'.[umap]')", self.name)
                continue
            title = {"tsne": "t-SNE", "umap": "UMAP"}[kind]
            written.append(plots.embedding_map(
                points, labels, fs.join(directory, f"{kind}_step{step}.png"),
                f"{title} of {len(points)} embeddings, {name}"))
        if self.config.queries:
            queries = spread_queries(labels, self.config.queries)
            found = nearest_neighbours(features, queries, self.config.neighbours)
            match = (labels[found] == labels[queries][:, None]) & (labels[queries][:, None] >= 0)
            written.append(plots.retrieval_grid(
                images[queries], images[found], match,
                fs.join(directory, f"retrieval_step{step}.png"),
                f"nearest neighbours among {len(features)} images, {name}"))
        if attention is not None:
            written.append(plots.attention_maps(
                images[:len(attention)], attention,
                fs.join(directory, f"attention_step{step}.png"),
                f"class-token attention, last block, {name}"))
        metrics = fs.join(run.workdir, "metrics.jsonl")
        if self.config.curves and fs.exists(metrics):
            records = [json.loads(line) for line in fs.read_text(metrics).splitlines() if line]
            written.append(plots.training_curves(
                records, fs.join(directory, f"curves_step{step}.png"),
                f"{run.config.method.name}, training to step {step}"))
        log.info("%s: wrote %s", self.name, ", ".join(written) or "nothing")
        return {}

    def _attention(self, state: Any, images: np.ndarray) -> np.ndarray | None:
        """Attention maps of the first `attention_images` images; None where the backbone
        is not a ViT or none are asked for."""
        from sslx.evaluators.embed import normalized_images
        from sslx.models.vit import ViT

        backbone = self.run.method.backbone()
        if not (self.config.attention_images and isinstance(backbone, ViT)):
            return None
        normalised = normalized_images(images[:self.config.attention_images],
                                       self.run.config.data)
        variables = self.run.method.backbone_variables(state.params, state.method_state)
        return attention_of_class_token(backbone, variables, normalised)
