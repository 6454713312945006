"""What a stream is read from (`cascade.data.streams`): its shards, cut into partitions, and a reader for one shard.

A shard is a parquet or webdataset .tar file, one image file of a folder, or a hub dataset (split
into partitions by `datasets.distributed.split_dataset_by_node`). `stream_spec` lists them and
picks the number of partitions; `ShardReader` reads one shard's raw records from a saved `datasets`
position on (parquet resharded by row group, so that an open shard holds one row group).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config.sections import DataConfig
from ..errors import DataError
from .sources import ImageFiles, columns, list_image_folder, pack_info, shard_files

MAX_PARTITIONS = 64  # default cap: a checkpoint stores one small position per partition


@dataclass(frozen=True)
class Shard:
    name: str  # a file, or the hub dataset's name
    builder: str  # "image" (one image file), "parquet", "webdataset" or "hub"
    label: int = 0  # "image": the class of its folder


@dataclass
class Ordered:
    shards: list[Shard] | FolderShards
    order: np.ndarray | None

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> Shard:
        return self.shards[int(self.order[index]) if self.order is not None else index]


@dataclass
class StreamSpec:
    """What every reader needs to open the stream; picklable, so DataLoader workers get a copy."""

    name: str
    shards: list[Shard] | FolderShards
    class_names: list[str] | None  # None: labels are taken as they are (a stream with no class list)
    partitions: int
    cfg: DataConfig
    split: str
    seed: int
    hub_shards: int = 0  # hub: the dataset's own shard count
    shuffle: bool = True  # False: shards in sorted order (cascade pack)

    @property
    def by_record(self) -> bool:
        """Fewer shards than partitions: every partition reads every shard and keeps every P-th record."""
        return len(self.shards) < self.partitions and self.shards[0].builder != "hub"

    def shards_of(self, partition: int, epoch: int) -> "Ordered":
        """The shards of `partition` in the order of `epoch` (a view: no object per shard)."""
        own = self.shards if self.by_record or self.shards[0].builder == "hub" else self.shards[partition::self.partitions]
        order = np.random.default_rng([self.seed, partition, epoch]).permutation(len(own)) if self.shuffle else None
        return Ordered(own, order)

    def describe(self) -> str:
        what = (f"hub dataset {self.name} ({self.hub_shards} shards)" if self.shards[0].builder == "hub" else
                f"{len(self.shards)} {'image files' if self.shards[0].builder == 'image' else self.shards[0].builder + ' shards'} "
                f"in {self.name}")
        split = "every record dealt round the partitions" if self.by_record else "shards dealt round the partitions"
        return f"streaming {what}; {self.partitions} partitions ({split})"


def stream_spec(cfg: DataConfig, seed: int, readers: int, split: str | None = None) -> StreamSpec:
    """The stream `cfg` names, cut into partitions for (at least) `readers` readers."""
    split = split or cfg.split
    hub_shards = 0
    if cfg.source == "imagefolder":
        files, class_names = list_image_folder(cfg, split)
        shards = FolderShards(files)
    elif cfg.source == "shards":
        builder, files = shard_files(cfg)
        shards = [Shard(str(f), builder) for f in files]
        class_names = pack_info(cfg).get("classes") or _class_label_names(shards[0], cfg)
    elif cfg.source == "hub":
        base = _open_hub(cfg, split)
        hub_shards = base.num_shards
        shards = [Shard(cfg.path, "hub")]
        _, label_col = _columns(base, cfg, cfg.path)
        feature = base.features.get(label_col) if label_col else None
        class_names = list(feature.names) if hasattr(feature, "names") else ["all"] if label_col is None else None
    else:
        raise DataError(f"data.source={cfg.source!r} cannot be streamed; use imagefolder, shards or hub")
    count = hub_shards or len(shards)
    partitions = cfg.partitions or max(readers, min(count, MAX_PARTITIONS))
    if shards[0].builder == "image" and partitions > count:  # a file is one record: nothing to deal within it
        raise DataError(f"{cfg.path}: {count} image files cannot feed {partitions} partitions (at least one per "
                        "reader: processes x data.num_workers); use fewer, or data.streaming=false")
    return StreamSpec(str(cfg.path), shards, class_names, partitions, cfg, split, seed, hub_shards)


class FolderShards:
    """A folder's image files as one-record shards, without a Python object per file."""

    builder = "image"

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FolderShards(self.files[index])
        path, label = self.files[int(index)]
        return Shard(path, "image", label)


def _class_label_names(shard: Shard, cfg: DataConfig) -> list[str] | None:
    ds = _open_file(shard, cfg)
    _, label_col = _columns(ds, cfg, shard.name)
    feature = ds.features.get(label_col) if label_col else None
    return list(feature.names) if hasattr(feature, "names") else ["all"] if label_col is None else None


def _columns(ds, cfg: DataConfig, name: str) -> tuple[str, str | None]:
    if ds.features is None:
        raise DataError(f"{name}: the stream does not declare its columns (features), so they cannot be read as a "
                        "stream; use data.streaming=false")
    return columns(ds.features, cfg, name)


def _open_hub(cfg: DataConfig, split: str):
    import datasets

    try:
        # reshard: one data source per parquet row group, so an open stream buffers a row group, not a file
        return datasets.load_dataset(cfg.path, split=split, streaming=True).reshard()
    except Exception as e:  # the hub raises many types (connection, missing dataset, missing split)
        raise DataError(f"data.path={cfg.path!r}: cannot stream hub dataset split {split!r} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None


def _open_file(shard: Shard, cfg: DataConfig):
    import datasets

    if not Path(shard.name).is_file():
        raise DataError(f"{shard.name}: shard not found (deleted or moved during the run?)")
    try:
        if shard.builder == "parquet":  # a corrupt footer: our one line, not `datasets`' ERROR log line before it
            import pyarrow.parquet as pq

            pq.read_schema(shard.name)
        ds = datasets.load_dataset(shard.builder, data_files=[shard.name], split="train", streaming=True)
        # Parquet: one data source per row group, so that a stream holds one row group, not the whole
        # file (pyarrow pre-buffers the fragment it reads).
        return ds.reshard() if shard.builder == "parquet" else ds
    except Exception as e:  # pyarrow/tarfile raise their own types for a corrupt shard
        raise DataError(f"{shard.name}: unreadable {shard.builder} shard ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None


class ShardReader:
    """The raw records of one shard, from a saved `datasets` position on."""

    def __init__(self, spec: StreamSpec, shard: Shard, partition: int, state: dict | None, pos: int):
        self.shard, self.pos, self.ds = shard, pos, None
        if shard.builder == "image":
            self._rows = iter([({"bytes": None, "path": shard.name}, shard.label)][pos:])
            return
        import datasets
        from datasets.distributed import split_dataset_by_node

        if shard.builder == "hub":
            base = _open_hub(spec.cfg, spec.split)
            # By shard (each read once) when there are enough, even if they do not divide evenly;
            # else every partition reads everything and keeps every P-th example.
            strategy = "shards" if base.num_shards >= spec.partitions else "examples"
            ds = split_dataset_by_node(base, rank=partition, world_size=spec.partitions, strategy=strategy)
        else:
            ds = _open_file(shard, spec.cfg)
        image_col, label_col = _columns(ds, spec.cfg, shard.name)
        self.ds = ds.cast_column(image_col, datasets.Image(decode=False))
        if state is not None:
            self.ds.load_state_dict(state)
        # `iter(batch_size=1)`: `__iter__` inside a DataLoader worker would split the shard among the workers.
        self._rows = ((row[image_col][0], int(row[label_col][0]) if label_col else 0)
                      for row in self.ds.iter(batch_size=1))

    def state(self) -> dict | None:
        return self.ds.state_dict() if self.ds is not None else None

    def next(self) -> tuple[dict, int, str] | None:
        """(record, label, name) of the next record, or None at the end; DataError for a corrupt shard."""
        try:
            record, label = next(self._rows)
        except StopIteration:
            return None
        except DataError:
            raise
        except Exception as e:  # pyarrow, tarfile, fsspec: a corrupt or vanished shard
            raise DataError(f"{self.shard.name}: unreadable shard at record {self.pos} ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
        name = self.shard.name if self.shard.builder == "image" else f"{self.shard.name} record {self.pos}"
        self.pos += 1
        return record, label, name
