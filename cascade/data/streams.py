"""Training data read as a stream (`data.streaming: true`): nothing indexed up front, resumed exactly.

Sources: `imagefolder` (the folder's image files, listed once), `shards` (parquet or webdataset .tar
files, each read as a `datasets` streaming IterableDataset) and `hub` (`datasets.load_dataset(...,
streaming=True)`, split with `datasets.distributed.split_dataset_by_node`); what is read, and how
one shard is read, is `cascade.data.shards`; this module is the order, the batches and the resume.

Partitions. The data is cut into P partitions that stay fixed for the whole run, whatever the number
of processes (`data.partitions`; default min(shards, 64), at least the number of readers). Partition p
holds shards p, p+P, p+2P, ... (a folder's files are its shards); with fewer shards than P it holds
every P-th record of every shard instead (read in full by every partition: pack more shards). A
*reader* is one process, or one DataLoader worker of a process (readers = processes x workers);
reader r reads the partitions p = r (mod readers), one record from each in turn, and makes whole
batches. Every partition loops over its shards forever, in a new order each epoch (seeded by run
seed, partition and epoch), so no process ever runs out of data before the others: an uneven split
(shards that do not divide among the readers, shards of different sizes) neither hangs a
multi-process run nor drops data; a partition with more data simply takes longer per epoch.

Shuffling. Within a shard, records are shuffled in blocks: a block is the next `shuffle_buffer /
partitions-per-reader` records of the shard, permuted by (seed, partition, epoch, shard, block), so
a reader holds about `data.shuffle_buffer` raw records.

State. A partition's position is (epoch, shard of that epoch's order, the shard's `datasets`
`state_dict()` at the start of the current block, records of the block handed out). Each batch
carries the positions of its reader's partitions after it; the loader keeps those of the batches the
training loop has consumed (not those prefetched), and every checkpoint stores them for every
partition. Resuming restores each partition: with the same processes and workers the run continues
bit for bit (each reader's turn and which worker comes next are restored too); with another number
of processes or workers, partitions are dealt to the new readers and each continues where it stopped,
so no example is repeated or skipped (a block keeps the size it started with); only the order in
which partitions are interleaved differs. A resume reads again, without decoding, the records of each
partition's current block before the position (parquet: at most `shuffle_buffer` raw records per
reader; a .tar shard `datasets` re-iterates from its start). Each process saves its own partitions'
positions only, with the shard list's count and hash.

Every example's crop, flip and training draws are seeded by (seed, partition, epoch, index in the
partition's epoch), not by the process or worker that reads it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config.sections import DataConfig
from ..errors import DataError
from .crops import make_example
from .shards import ShardReader, StreamSpec, stream_spec
from .sources import decode


@dataclass
class Position:
    """Where a partition is; `taken` records of the block that starts at (`shard_state`, `pos`) are out."""

    epoch: int = 0
    shard: int = 0  # index into the epoch's shard order
    shard_state: dict | None = None  # the shard's datasets state_dict at the block's start (None: its start)
    pos: int = 0  # raw records of the shard before the block
    block: int = 0  # block number within the shard
    block_size: int = 0  # records in this block (0: the partition's default)
    taken: int = 0  # records of the block handed out
    index: int = 0  # records handed out this epoch (seeds the examples)
    skipped_shards: int = 0


class PartitionStream:
    """The records of one partition, forever; `position` is always where the last one handed out left it."""

    def __init__(self, spec: StreamSpec, partition: int, position: dict | None, block_size: int):
        self.spec, self.partition, self.block_size = spec, partition, block_size
        self.position = Position(**position) if position else Position()

    def __iter__(self):
        spec, p, at = self.spec, self.partition, self.position
        stride = spec.partitions if spec.by_record else 1
        while True:
            order = spec.shards_of(p, at.epoch)
            handed_out = at.index
            while at.shard < len(order):
                shard = order[at.shard]
                try:
                    reader = ShardReader(spec, shard, p, at.shard_state, at.pos)
                    while True:
                        at.block_size = at.block_size or self.block_size  # a resumed block keeps its size
                        block, ended = self._read_block(reader, at.block_size, stride)
                        perm = (np.random.default_rng([spec.seed, p, at.epoch, at.shard, at.block]).permutation(len(block))
                                if spec.shuffle else range(len(block)))
                        while at.taken < len(block):
                            item = block[perm[at.taken]]
                            at.taken += 1
                            at.index += 1
                            handed_out += 1
                            yield (*item, (p, at.epoch, at.index - 1))
                        if ended:
                            break
                        at.shard_state, at.pos, at.block, at.block_size, at.taken = reader.state(), reader.pos, at.block + 1, 0, 0
                except DataError as e:
                    if spec.cfg.on_bad_image == "error":
                        raise
                    at.skipped_shards += 1
                    tqdm.write(f"warning: skipping the rest of {e} [{at.skipped_shards} shards skipped so far in "
                               f"partition {p}]", file=sys.stderr)
                at.shard, at.shard_state, at.pos, at.block, at.block_size, at.taken = at.shard + 1, None, 0, 0, 0, 0
            if handed_out == 0:
                raise DataError(f"{spec.name}: partition {p} of {spec.partitions} has no records left "
                                f"(its {len(order)} shards are empty or unreadable)")
            at.epoch, at.shard, at.index = at.epoch + 1, 0, 0

    def _read_block(self, reader: ShardReader, size: int, stride: int) -> tuple[list, bool]:
        block = []
        while len(block) < size:
            pos = reader.pos
            item = reader.next()
            if item is None:
                return block, True
            if pos % stride == self.partition % stride:
                block.append(item)
        return block, False


class StreamedCrops(torch.utils.data.IterableDataset):
    """Whole batches of random crops from a reader's partitions; each carries the reader's state after it.

    Iterated in the main process (data.num_workers=0: one reader per process) or in each DataLoader
    worker (one reader per worker). `resume` is set by `StreamLoader.load_state_dict`.
    """

    def __init__(self, spec: StreamSpec, size: int, batch_size: int, rank: int = 0, world: int = 1,
                 num_classes: int = 0):
        self.spec, self.size, self.batch_size, self.rank, self.world = spec, size, batch_size, rank, world
        self.workers = max(1, spec.cfg.num_workers)
        # labels must lie in the stream's classes, or in the model's when the stream lists none
        self.num_classes = len(spec.class_names) if spec.class_names is not None else num_classes
        self.resume: dict = {"positions": {}, "turns": {}, "rotation": 0}

    @property
    def readers(self) -> int:
        return self.world * self.workers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        role = ((info.id if info else 0) + self.resume["rotation"]) % self.workers
        reader = self.rank * self.workers + role
        try:
            yield from self._batches(reader)
        except DataError as e:  # raised again by StreamLoader in the main process, as one line
            yield {"error": str(e)}

    def _batches(self, reader: int):
        spec, cfg = self.spec, self.spec.cfg
        parts = list(range(reader, spec.partitions, self.readers))
        block = max(1, cfg.shuffle_buffer // len(parts))
        streams = [PartitionStream(spec, p, self.resume["positions"].get(p), block) for p in parts]
        records = [iter(s) for s in streams]
        turn, skipped = self.resume["turns"].get(reader, 0), 0
        decoded_at = [s.position.epoch for s in streams]  # each partition's epoch at the last decoded image
        while True:
            examples = []
            while len(examples) < self.batch_size:
                k = turn % len(parts)
                turn += 1
                record, label, name, key = next(records[k])
                try:
                    image = decode(record, name)
                except DataError as e:
                    if cfg.on_bad_image == "error":
                        raise
                    skipped += 1
                    tqdm.write(f"warning: skipping {e} [{skipped} skipped so far by reader {reader}]", file=sys.stderr)
                    if all(s.position.epoch >= e0 + 2 for s, e0 in zip(streams, decoded_at)):  # a whole epoch, none
                        raise DataError(f"{spec.name}: no decodable image in a whole epoch of partitions "
                                        f"{', '.join(map(str, parts))} ({skipped} skipped)") from None
                    continue
                decoded_at = [s.position.epoch for s in streams]
                if self.num_classes and not 0 <= label < self.num_classes:
                    raise DataError(f"{name}: label {label} is outside the {self.num_classes} classes "
                                    f"[0, {self.num_classes})")
                crop_seed, draw_seed = np.random.SeedSequence([spec.seed, *key]).generate_state(2)
                example = make_example(image, label, self.size, cfg, int(crop_seed), int(draw_seed))
                examples.append({**example, "epoch": key[1], "name": name})
            batch = torch.utils.data.default_collate(examples)
            batch["state"] = json.dumps({"reader": reader, "turn": turn,
                                         "positions": {p: vars(s.position) for p, s in zip(parts, streams)}})
            yield batch


@dataclass
class StreamLoader:
    """Batches of a `StreamedCrops` (forever), with the consumed position of this process's partitions."""

    dataset: StreamedCrops
    batches: int = 0  # batches this process has consumed
    positions: dict = field(default_factory=dict)  # partition -> position, for this process's partitions
    turns: dict = field(default_factory=dict)  # reader -> turn, for this process's readers
    next_role: int = 0  # which of this process's workers makes the next batch

    def __iter__(self):
        cfg = self.dataset.spec.cfg
        # Its own generator: a new iterator draws a seed for the workers, from the global RNG otherwise,
        # which would put the training draws (dropout) of a resumed run one draw off.
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=None, num_workers=cfg.num_workers,
                                             generator=torch.Generator().manual_seed(self.dataset.spec.seed))
        for batch in loader:
            if "error" in batch:
                raise DataError(batch["error"])
            state = json.loads(batch.pop("state"))
            self.positions.update({int(p): s for p, s in state["positions"].items()})
            self.turns[state["reader"]] = state["turn"]
            self.next_role = (state["reader"] - self.dataset.rank * self.dataset.workers + 1) % self.dataset.workers
            self.batches += 1
            yield batch

    def fingerprint(self) -> dict:
        """The shard list's count and hash: a resume refuses positions saved for other shards."""
        if not hasattr(self, "_fingerprint"):
            spec = self.dataset.spec
            names = "\n".join(spec.shards[i].name for i in range(len(spec.shards))).encode()
            self._fingerprint = {"shards": len(spec.shards), "sha256": hashlib.sha256(names).hexdigest()[:16]}
        return self._fingerprint

    def state_dict(self) -> dict:
        """This process's part of the data position (every process's goes into a checkpoint)."""
        return {"partitions": self.dataset.spec.partitions, "readers": self.dataset.readers,
                "workers": self.dataset.workers, "batches": self.batches, "next_role": self.next_role,
                "data": self.fingerprint(),
                "positions": {str(p): s for p, s in sorted(self.positions.items())},
                "turns": {str(r): t for r, t in sorted(self.turns.items())}}

    def load_state_dict(self, states: list[dict]) -> str | None:
        """Continue from the states every process of a checkpoint saved; a warning when the readers changed."""
        if not states:
            return None
        data, spec, first = self.dataset, self.dataset.spec, states[0]
        if first.get("data") and first["data"] != self.fingerprint():
            raise DataError(f"data.path={spec.name!r}: its shards changed since the checkpoint ({first['data']['shards']} "
                            f"then, {len(spec.shards)} now, or other names); the saved positions no longer apply")
        if first["partitions"] < data.readers:
            raise DataError(f"the checkpoint's stream has {first['partitions']} partitions, fewer than the "
                            f"{data.readers} readers now (processes x data.num_workers); resume with fewer")
        spec.partitions = first["partitions"]
        positions = {int(p): s for state in states for p, s in state["positions"].items()}
        turns = {int(r): t for state in states for r, t in state["turns"].items()}
        same = first["readers"] == data.readers and first["workers"] == data.workers
        # partition p is read by reader p mod R, which is a worker of process (p mod R) // workers
        self.positions = {p: s for p, s in positions.items() if (p % data.readers) // data.workers == data.rank}
        self.batches = first["batches"]
        self.turns = {r: t for r, t in turns.items() if r // data.workers == data.rank} if same else {}
        self.next_role = states[min(data.rank, len(states) - 1)].get("next_role", 0) if same else 0
        data.resume = {"positions": self.positions, "turns": self.turns, "rotation": self.next_role}
        if same:
            return None
        return (f"data: resumed with {data.readers} readers where the checkpoint had {first['readers']} "
                f"(processes x workers): each of the {spec.partitions} partitions continues where it stopped, so no "
                "example is repeated or skipped, but the partitions are interleaved in another order, so this run "
                "is not the one an uninterrupted run would have been")


def make_loader(cfg: DataConfig, size: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                num_classes: int = 0) -> StreamLoader:
    """Batches of `batch_size` crops at `size` px for process `rank` of `world`; labels must be
    below `num_classes` when the stream lists no classes of its own."""
    spec = stream_spec(cfg, seed, world * max(1, cfg.num_workers))
    if spec.partitions < world * max(1, cfg.num_workers):
        raise DataError(f"data.partitions={spec.partitions} is below the {world * max(1, cfg.num_workers)} readers "
                        "(processes x data.num_workers); raise it or use fewer workers")
    return StreamLoader(StreamedCrops(spec, size, batch_size, rank, world, num_classes))


def first_images(cfg: DataConfig, count: int) -> list:
    """The first `count` images of the stream's partition 0 (repeated if it holds fewer), for previews."""
    spec = stream_spec(cfg, 0, 1)
    images = []
    for record, _, name, _ in PartitionStream(spec, 0, None, 1):
        images.append(decode(record, name))
        if len(images) == count:
            return images
