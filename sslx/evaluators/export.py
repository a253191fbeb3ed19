"""Embeddings of a split written as shard files, streamed as they are computed.

A split of ImageNet's size embeds to more floats than one host should hold, so
each host embeds its own shard of the split (`embed.host_batches`) and writes it
as it goes, `shard_size` rows per file, and process 0 then writes one index:

    <directory>/<split>/features-<host>-<k>.npy   float32 [rows, D]
    <directory>/<split>/labels-<host>-<k>.npy     int32 [rows] (labelled splits only)
    <directory>/<split>/index.json                the shards in order, with their row
                                                  count and global offset, D, the
                                                  step, method, model and data config

Host shards are contiguous pieces of the split in host order, so the shards in
index order are the split in its own order. The index is what counts: until the
export ends it says the export is incomplete, and shard files of an earlier export
that it does not list are not part of this one. `read_embeddings` concatenates them
(for whoever has the memory), `iter_embeddings` yields them one at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from sslx import fs
from sslx.checkpoint import describe
from sslx.data import sources
from sslx.errors import DataError, SslxError
from sslx.evaluators import embed
from sslx.methods.base import Method

INDEX_FILE = "index.json"
DEFAULT_SHARD_SIZE = 65536  # rows per file: 512 MiB of float32 features at D = 2048
FORMAT = "sslx-embeddings-1"

Save = Callable[[str, np.ndarray], None]


def shard_size(config: ml_collections.ConfigDict) -> int:
    """Rows per shard file: `config.eval.export_shard_size` where the config has it."""
    size = int(config.eval.get("export_shard_size", DEFAULT_SHARD_SIZE))
    if size < 1:
        raise SslxError(f"config.eval.export_shard_size={size} must be at least 1")
    return size


def shard_files(host: int, k: int) -> tuple[str, str]:
    """File names of host `host`'s `k`-th shard: features, labels."""
    return f"features-{host}-{k}.npy", f"labels-{host}-{k}.npy"


def save_npy(path: str, array: np.ndarray) -> None:
    """`np.save` straight into the file (local or remote): numpy writes a file object
    in chunks, so no second copy of the shard is built in memory."""
    with fs.open_file(path, "wb") as f:
        np.save(f, array)


def load_npy(path: str) -> np.ndarray:
    """`np.load` straight from the file (local or remote), read in chunks into the
    array, so a shard is never held twice."""
    with fs.open_file(path, "rb") as f:
        return np.load(f)


@dataclasses.dataclass
class ShardWriter:
    """One host's rows, gathered in a buffer of `shard_size` rows and written as a
    shard whenever it fills: the host never holds more than one shard (plus the
    batch being added), however large its part of the split."""

    directory: str
    host: int
    shard_size: int
    labelled: bool
    save: Save | None = None  # None: `save_npy`
    rows: int = 0  # written or buffered so far
    feature_dim: int = 0
    _features: np.ndarray | None = None
    _labels: np.ndarray | None = None
    _filled: int = 0
    _shards: int = 0

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Appends a batch's rows, writing every shard they complete."""
        if self._features is None:
            # Pages of np.empty are only touched as rows arrive: a small split
            # costs its own size, not a whole shard's.
            self.feature_dim = int(features.shape[1])
            self._features = np.empty([self.shard_size, self.feature_dim], np.float32)
            self._labels = np.empty([self.shard_size], np.int32)
        start = 0
        while start < len(features):
            take = min(len(features) - start, self.shard_size - self._filled)
            self._features[self._filled:self._filled + take] = features[start:start + take]
            self._labels[self._filled:self._filled + take] = labels[start:start + take]
            self._filled, start, self.rows = self._filled + take, start + take, self.rows + take
            if self._filled == self.shard_size:
                self._flush()

    def close(self) -> None:
        """Writes the last, partly filled shard and frees the buffer."""
        if self._filled:
            self._flush()
        self._features = self._labels = None

    def _flush(self) -> None:
        features_file, labels_file = shard_files(self.host, self._shards)
        save = self.save or save_npy
        save(fs.join(self.directory, features_file), self._features[:self._filled])
        if self.labelled:
            save(fs.join(self.directory, labels_file), self._labels[:self._filled])
        self._shards, self._filled = self._shards + 1, 0


def write_host_shards(batches: Iterable[tuple[np.ndarray, np.ndarray]], directory: str,
                      host: int, shard_size: int, labelled: bool,
                      save: Save | None = None) -> tuple[int, int]:
    """Streams `(features, labels)` batches of host `host` into its shard files in
    `directory`; returns `(rows, feature_dim)` (0, 0 for a host with no rows)."""
    fs.makedirs(directory)
    writer = ShardWriter(directory, host, shard_size, labelled, save)
    for features, labels in batches:
        writer.add(features, labels)
    writer.close()
    return writer.rows, writer.feature_dim


def shard_entries(host_rows: Sequence[int], shard_size: int,
                  labelled: bool) -> list[dict[str, Any]]:
    """The index's shard list from each host's row count, in host order: every host
    cut its rows into `shard_size`-row shards, so the counts say it all."""
    entries, offset = [], 0
    for host, rows in enumerate(host_rows):
        for k, start in enumerate(range(0, rows, shard_size)):
            features_file, labels_file = shard_files(host, k)
            count = min(shard_size, rows - start)
            entries.append({"features": features_file,
                            "labels": labels_file if labelled else None,
                            "rows": count, "offset": offset, "host": host})
            offset += count
    return entries


def write_index(directory: str, split: str, host_rows: Sequence[int], feature_dim: int,
                shard_size: int, labelled: bool, config: ml_collections.ConfigDict,
                step: int) -> str:
    """Writes `directory/index.json` for the shards of every host; returns its path."""
    shards = shard_entries(host_rows, shard_size, labelled)
    path = fs.join(directory, INDEX_FILE)
    fs.write_json(path, {
        "format": FORMAT, "complete": True, **describe(config), "step": step, "split": split,
        "num_examples": sum(host_rows), "feature_dim": feature_dim, "dtype": "float32",
        "labelled": labelled, "shard_size": shard_size, "process_count": len(host_rows),
        "shards": shards, "data": config.data.to_dict()})
    return path


def export_host(method: Method, params: Any, method_state: Any,
                config: ml_collections.ConfigDict, split: str, mesh: Mesh, directory: str, *,
                process_index: int, process_count: int, save: Save | None = None,
                ) -> tuple[int, int, bool]:
    """Embeds and writes one host's shard of `split` into `directory`;
    returns `(rows, feature_dim, labelled)`. Labels files are written where the
    split has classes (the source's `num_classes`, the same on every host)."""
    source = sources.load_split(config.data, split, process_index=process_index,
                                process_count=process_count)
    labelled = source.num_classes is not None
    batches = embed.host_batches(method, params, method_state, config, split, mesh,
                                 source=source)
    rows, dim = write_host_shards(batches, directory, process_index, shard_size(config),
                                  labelled, save)
    return rows, dim, labelled


def export_split(method: Method, params: Any, method_state: Any,
                 config: ml_collections.ConfigDict, split: str, mesh: Mesh, directory: str,
                 step: int) -> dict[str, str]:
    """Every host writes its shard of `split` to `directory/<split>/`, then process 0
    writes the index; returns `{'index': path}` on process 0, `{}` elsewhere.
    Every process must call it (the row counts are gathered over hosts)."""
    split_dir = fs.join(directory, split)
    index, count = jax.process_index(), jax.process_count()
    if index == 0:
        mark_incomplete(split_dir, split)
    if count > 1:  # no shard is rewritten while an earlier index still lists it
        multihost_utils.sync_global_devices(f"sslx export {split} start")
    rows, dim, labelled = export_host(method, params, method_state, config, split, mesh,
                                      split_dir, process_index=index, process_count=count)
    host_rows, dim = _gathered_rows(rows, dim)
    paths = {}
    if index == 0:
        expected = sources.num_examples(config.data, split)
        if sum(host_rows) != expected:
            raise DataError(f"export of split {split!r} wrote {sum(host_rows)} rows, "
                            f"but the split holds {expected}")
        paths["index"] = write_index(split_dir, split, host_rows, dim, shard_size(config),
                                     labelled, config, step)
    if count > 1:  # no host returns before the index exists
        multihost_utils.sync_global_devices(f"sslx export {split}")
    return paths


def mark_incomplete(directory: str, split: str) -> None:
    """Replaces an earlier export's index in `directory` by one that says an export
    is under way, so that an export that fails midway never leaves an index over
    rewritten shards. Without an earlier index there is nothing to replace."""
    path = fs.join(directory, INDEX_FILE)
    if fs.exists(path):
        fs.write_json(path, {"format": FORMAT, "complete": False, "split": split})


def _gathered_rows(rows: int, dim: int) -> tuple[list[int], int]:
    """Every host's row count (host order) and the feature dim, gathered over hosts;
    the gather also waits until every host has written its shards."""
    if jax.process_count() == 1:
        return [rows], dim
    gathered = np.asarray(multihost_utils.process_allgather(np.asarray([rows, dim], np.int64)))
    return [int(r) for r in gathered[:, 0]], int(gathered[:, 1].max())


def index_path(path: str, split: str | None = None) -> str:
    """The index of `split` under `path`: an index.json itself, a split's folder, the
    embeddings folder or the run's workdir, whichever holds it."""
    if path.endswith(".json"):
        candidates = [path]
    else:
        candidates = [fs.join(path, INDEX_FILE)]
        if split:
            candidates += [fs.join(path, split, INDEX_FILE),
                           fs.join(path, "embeddings", split, INDEX_FILE)]
    for candidate in candidates:
        if fs.exists(candidate):
            return candidate
    hint = "" if split or path.endswith(".json") else " (name the split)"
    raise DataError(f"no embeddings index {' or '.join(candidates)}{hint}; "
                    "`--mode=export` writes one")


def read_index(path: str, split: str | None = None) -> dict[str, Any]:
    """The index (`write_index`) of `split` under `path` (see `index_path`), with
    `directory`, the folder its shard files are in."""
    location = index_path(path, split)
    index = fs.read_json(location)
    if index.get("format") != FORMAT:
        raise DataError(f"{location} is not an sslx embeddings index (format "
                        f"{index.get('format')!r}, expected {FORMAT!r})")
    if not index.get("complete"):
        raise DataError(f"{location}: the export of split {index['split']!r} did not finish; "
                        "run `--mode=export` again")
    if split is not None and index["split"] != split:
        raise DataError(f"{location} holds split {index['split']!r}, not {split!r}")
    return {**index, "directory": location.rpartition("/")[0] or "."}


def iter_embeddings(path: str, split: str | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The exported shards of `split` one at a time, in the split's order: features
    float32 [rows, D] and labels int32 [rows] (-1 throughout for an unlabelled
    split). `path`: an index.json, a split's folder, the embeddings folder or the
    workdir."""
    index = read_index(path, split)
    for shard in index["shards"]:
        features = load_npy(fs.join(index["directory"], shard["features"]))
        if shard["labels"]:
            labels = load_npy(fs.join(index["directory"], shard["labels"]))
        else:
            labels = np.full([len(features)], -1, np.int32)
        if len(features) != shard["rows"] or len(labels) != shard["rows"]:
            raise DataError(f"shard {shard['features']} holds {len(features)} rows, "
                            f"its index says {shard['rows']}")
        yield features, labels


def read_embeddings(path: str, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All of `split`'s exported features float32 [N, D] and labels int32 [N] (-1
    where unlabelled), the shards of `iter_embeddings` concatenated: only for
    splits that fit in this host's memory."""
    index = read_index(path, split)
    features = np.empty([index["num_examples"], index["feature_dim"]], np.float32)
    labels = np.empty([index["num_examples"]], np.int32)
    for shard, (part, part_labels) in zip(index["shards"], iter_embeddings(path, split),
                                          strict=True):
        features[shard["offset"]:shard["offset"] + shard["rows"]] = part
        labels[shard["offset"]:shard["offset"] + shard["rows"]] = part_labels
    return features, labels
