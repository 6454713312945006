"""Data at scale: packed shards, streamed reading with exact resume, partitions across processes,
world-size changes, bad shards, and map-style sources that are indexed rather than loaded."""

import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cascade.config.sections import DataConfig
from cascade.data import crops
from cascade.data import sources as data
from cascade.data import streams
from cascade.data.packing import grid, pack, resize_shorter, sub_images
from cascade.data.shards import stream_spec
from cascade.errors import DataError
from conftest import run, run_together


def make_folder(root: Path, per_class=(7, 6), seed=0) -> dict[str, np.ndarray]:
    """An image folder of random-noise PNGs of assorted sizes, two classes; returns {relative path: pixels}."""
    rng = np.random.default_rng(seed)
    images = {}
    for c, count in zip("ab", per_class):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (40 + 3 * i, 56 - 2 * i, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
            images[f"{c}/{i}.png"] = pixels
    return images


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    return root, make_folder(root)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    """The folder packed at --size 32 into parquet shards of ~4 records (4 shards) and into one tar."""
    out = tmp_path_factory.mktemp("packed")
    pack(str(folder[0]), str(out / "parquet"), size=32, shard_size="12KB", workers=1, progress=False)
    pack(str(folder[0]), str(out / "tar"), size=32, fmt="webdataset", workers=1, progress=False)
    return out


def stream_cfg(path, **kw):
    source = kw.pop("source", "imagefolder" if "folder" in str(path) else "shards")
    return DataConfig(source=source, path=str(path), streaming=True, shuffle_buffer=kw.pop("shuffle_buffer", 3), **kw)


def take(cfg, n, states=None, rank=0, world=1, batch=3):
    loader = streams.make_loader(cfg, 16, batch, seed=0, rank=rank, world=world)
    warning = loader.load_state_dict(states) if states else None
    it = iter(loader)
    return [next(it) for _ in range(n)], loader.state_dict(), warning


def names_of_epoch(batches, epoch=0):
    return Counter(n for b in batches for n, e in zip(b["name"], b["epoch"].tolist()) if e == epoch)


def record_names(cfg):
    """Every record of a stream, by the name a batch gives it (one pass over every shard)."""
    spec = stream_spec(cfg, 0, 1)
    spec.partitions, spec.shuffle = 1, False
    names = []
    for _, _, name, key in streams.PartitionStream(spec, 0, None, 1):
        if key[1]:
            return Counter(names)
        names.append(name)


# --- pack


def test_pack_round_trip_equals_the_resized_originals(folder, shards):
    info = json.loads((shards / "parquet" / "pack.json").read_text())
    assert info["records"] == info["images"] == 13 and info["classes"] == ["a", "b"] and len(info["shards"]) >= 3
    source = data.load_source(DataConfig(source="shards", path=str(shards / "parquet")))
    assert len(source) == 13 and source.class_names == ["a", "b"]
    for i in range(len(source)):
        path = source.records[i]["path"]
        original = Image.fromarray(folder[1][path])
        expected = original.resize((32, round(original.height * 32 / original.width)) if original.width < original.height
                                   else (round(original.width * 32 / original.height), 32), Image.BICUBIC, reducing_gap=None)
        assert np.array_equal(np.asarray(source.load(i)), np.asarray(expected)), path
        assert source.labels[i] == "ab".index(path[0])
    tar = data.load_source(DataConfig(source="shards", path=str(shards / "tar")))
    assert tar.class_names == ["a", "b"] and sorted(tar.labels.tolist()) == sorted(source.labels.tolist())


def test_sub_images_follow_basicsr_grid():
    # BasicSR extract_subimages on a 1000-px side, crop 480, step 240: arange(0, 521, 240) = 0, 240, 480, then 520
    assert grid(1000, 480, 240) == [0, 240, 480, 520]
    assert grid(960, 480, 240) == [0, 240, 480]  # the grid ends flush: nothing appended
    assert grid(300, 480, 240) == [0]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (500, 1000, 3), dtype=np.uint8))
    parts = sub_images(image, 480, 240)
    assert [o for o, _ in parts] == [(x, y) for y in (0, 20) for x in (0, 240, 480, 520)]
    (x, y), part = parts[5]
    assert np.array_equal(np.asarray(part), np.asarray(image)[y:y + 480, x:x + 480])
    assert resize_shorter(image, 600) is image and resize_shorter(image, 250).size == (500, 250)


def test_pack_cli_cuts_sub_images_and_refuses_a_used_folder(folder, tmp_path):
    proc = run("-m", "cascade", "pack", str(folder[0]), str(tmp_path / "sub"), "--crops", "24", "--stride", "16",
               "--workers", "2")
    info = json.loads((tmp_path / "sub" / "pack.json").read_text())
    expected = sum(len(grid(p.shape[0], 24, 16)) * len(grid(p.shape[1], 24, 16)) for p in folder[1].values())
    assert info["records"] == expected and f"{expected} records from 13 images" in proc.stdout
    with pytest.raises(DataError, match="already holds packed shards"):
        pack(str(folder[0]), str(tmp_path / "sub"), progress=False)
    assert json.loads((tmp_path / "sub" / "pack.json").read_text()) == info  # nothing overwritten
    with pytest.raises(DataError, match=r"^--shard-size 'lots': not a size \(e.g. 1GB, 500MB\)$"):
        pack(str(folder[0]), str(tmp_path / "x"), shard_size="lots")
    with pytest.raises(DataError, match=r"--stride needs --crops"):
        pack(str(folder[0]), str(tmp_path / "x"), stride=4)


# --- streaming: order, resume, partitions


@pytest.fixture(scope="module")
def row_groups(tmp_path_factory):
    """One parquet file of 30 records in row groups of 4 (the unit a parquet stream reads)."""
    root = tmp_path_factory.mktemp("row_groups")
    rng = np.random.default_rng(1)
    write_parquet(root / "one.parquet", [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(30)],
                  row_group_size=4)
    return root


@pytest.mark.parametrize("source, workers, stop", [
    ("parquet", 0, 4), ("parquet", 2, 5), ("tar", 0, 3), ("folder", 2, 3),
    ("hub", 1, 4),  # a local folder of parquet files read as a hub dataset: split_dataset_by_node's partitions
    ("row_groups", 0, 5),  # blocks of 8 records across row groups of 4, resumed mid-block
])
def test_streamed_resume_continues_bit_for_bit(shards, folder, row_groups, source, workers, stop):
    path = {"folder": folder[0], "row_groups": row_groups, "hub": shards / "parquet"}.get(source, shards / source)
    extra = {"source": "hub"} if source == "hub" else {"shuffle_buffer": 8} if source == "row_groups" else {}
    cfg = stream_cfg(path, num_workers=workers, **extra)
    straight, _, _ = take(cfg, 9)
    first, state, _ = take(cfg, stop)
    rest, _, warning = take(cfg, 9 - stop, [state])
    assert warning is None
    for i, (a, b) in enumerate(zip(straight, first + rest)):
        assert a["name"] == b["name"], f"batch {i}"
        for key in ("image", "label", "seed"):
            assert torch.equal(a[key], b[key]), f"batch {i}: {key}"


def test_every_record_once_per_epoch_and_processes_see_disjoint_partitions(shards):
    cfg = stream_cfg(shards / "parquet")
    everything = record_names(cfg)
    assert sum(everything.values()) == 13
    # 2 processes (ranks simulated): each sees only its partitions, together every record once per epoch
    seen = [names_of_epoch(take(cfg, 12, rank=r, world=2)[0]) for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] + seen[1] == everything


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_changed_process_count_neither_repeats_nor_skips(shards, before, after):
    """Blocks of 4 records per partition with 2 readers, of 2 with one: a partition resumed mid-block
    finishes the block it was in with the block's own size and permutation."""
    cfg = stream_cfg(shards / "parquet", partitions=4, shuffle_buffer=8)
    everything = record_names(cfg)
    phase1 = [take(cfg, 2, rank=r, world=before) for r in range(before)]
    states = [s for _, s, _ in phase1]
    seen = sum((names_of_epoch(b) for b, _, _ in phase1), Counter())
    assert 0 < sum(seen.values()) < 13
    for r in range(after):
        batches, _, warning = take(cfg, 12, states, rank=r, world=after)
        assert "no example is repeated or skipped" in warning
        seen += names_of_epoch(batches)
    assert seen == everything  # each record exactly once in epoch 0


def test_resuming_twice_with_several_processes_stays_exact(shards):
    """Each process saves only its own partitions' positions, so a second resume starts from the
    latest positions of every partition (not from copies the first resume handed every process)."""
    cfg = stream_cfg(shards / "parquet", partitions=4, shuffle_buffer=8)
    straight = [take(cfg, 6, rank=r, world=2)[0] for r in (0, 1)]
    first = [take(cfg, 2, rank=r, world=2) for r in (0, 1)]
    second = [take(cfg, 2, [s for _, s, _ in first], rank=r, world=2) for r in (0, 1)]
    third = [take(cfg, 2, [s for _, s, _ in second], rank=r, world=2) for r in (0, 1)]
    for r in (0, 1):
        assert sorted(second[r][1]["positions"]) == (["0", "2"] if r == 0 else ["1", "3"])
        resumed = first[r][0] + second[r][0] + third[r][0]
        assert [b["name"] for b in resumed] == [b["name"] for b in straight[r]], f"rank {r}"


def test_examples_do_not_depend_on_the_reader_that_serves_them(shards):
    """A record's crop and training seed are fixed by its place in its partition, not by the reader."""
    cfg = stream_cfg(shards / "parquet", partitions=4)
    one = take(cfg, 6)[0]
    two = take(cfg, 6, rank=1, world=2)[0]
    by_key = {(n, e): s for b in one for n, e, s in zip(b["name"], b["epoch"].tolist(), b["seed"].tolist())}
    common = [(n, e, s) for b in two for n, e, s in zip(b["name"], b["epoch"].tolist(), b["seed"].tolist())
              if (n, e) in by_key]
    assert common and all(by_key[(n, e)] == s for n, e, s in common)


# --- bad data


def write_parquet(path, images, bad_index=None, row_group_size=None):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x"])})
    rows = []
    for i, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        rows.append({"image": {"bytes": b"not an image" if i == bad_index else buffer.getvalue(), "path": f"{i}.png"},
                     "label": 0})
    pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), path, row_group_size=row_group_size)


def test_bad_records_and_shards_are_named_or_skipped_and_counted(tmp_path, capfd):
    pixels = [np.full((20, 20, 3), i * 20, np.uint8) for i in range(6)]
    root = tmp_path / "shards"
    root.mkdir()
    write_parquet(root / "s0.parquet", pixels, bad_index=4)
    write_parquet(root / "s1.parquet", pixels)
    with pytest.raises(DataError, match=r"s0.parquet record 4: cannot decode image"):
        take(stream_cfg(root, partitions=1), 5, batch=4)
    batches = take(stream_cfg(root, partitions=1, on_bad_image="skip"), 3, batch=4)[0]
    assert sum(len(b["name"]) for b in batches) == 12 and "s0.parquet record 4" not in sum((b["name"] for b in batches), [])
    assert "[1 skipped so far by reader 0]" in capfd.readouterr().err
    # a truncated shard, and a shard deleted after the run started
    (root / "s1.parquet").write_bytes((root / "s1.parquet").read_bytes()[:100])
    capfd.readouterr()
    with pytest.raises(DataError, match=r"s1.parquet: unreadable"):
        take(stream_cfg(root, partitions=2, on_bad_image="error"), 4, batch=4)
    assert "Failed to read schema" not in capfd.readouterr().err  # our one line alone, not `datasets`' log line too
    loader = streams.make_loader(stream_cfg(root, partitions=2, on_bad_image="skip"), 16, 2)
    (root / "s0.parquet").unlink()
    with pytest.raises(DataError, match=r"partition \d of 2 has no records left"):
        next(iter(loader))
    assert "s0.parquet: shard not found" in capfd.readouterr().err
    with pytest.raises(DataError, match=r"no .parquet or .tar shards there"):
        streams.make_loader(stream_cfg(tmp_path / "empty"), 16, 2)


def test_a_stream_needs_as_many_partitions_as_readers(shards, folder):
    with pytest.raises(DataError, match=r"13 image files cannot feed 16 partitions"):
        streams.make_loader(stream_cfg(folder[0], num_workers=2), 16, 2, world=8)
    with pytest.raises(DataError, match=r"data.partitions=2 is below the 4 readers"):
        streams.make_loader(stream_cfg(shards / "parquet", partitions=2, num_workers=2), 16, 2, world=2)
    _, state, _ = take(stream_cfg(shards / "parquet", partitions=2), 1)
    with pytest.raises(DataError, match=r"has 2 partitions, fewer than the 3 readers"):
        take(stream_cfg(shards / "parquet", num_workers=3), 1, [state])


# --- map-style: indexed, not loaded


def test_map_style_sources_hold_no_per_image_records(tmp_path):
    """10k images in a parquet dataset: building the source and loader allocates a small fraction
    of the image bytes (the records stay in the memory-mapped Arrow table; labels: 8 bytes each)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(10_000)]
    write_parquet(tmp_path / "big.parquet", images)
    data_bytes = (tmp_path / "big.parquet").stat().st_size
    assert data_bytes > 15e6
    cfg = DataConfig(source="shards", path=str(tmp_path / "big.parquet"))
    data.load_source(cfg)  # first call converts to the Arrow cache; measure the second, as every later run is
    import pyarrow as pa

    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    source = data.load_source(cfg)
    loader = crops.make_loader(source, 16, cfg, batch_size=8)
    batch = next(iter(loader))
    held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow_before  # Python + Arrow heaps
    tracemalloc.stop()
    assert len(source) == 10_000 and batch["image"].shape == (8, 3, 16, 16)
    assert held < 0.05 * data_bytes, f"{held / 1e6:.1f} MB held for {data_bytes / 1e6:.1f} MB of images"


# --- training on a stream


def stream_training(shards, out, *extra):
    return ["train/base.py", "--config", "configs/base_tiny.yaml", "data.source=shards", f"data.path={shards / 'parquet'}",
            "data.streaming=true", "data.shuffle_buffer=4", "model.num_classes=2", "train.save_every=3",
            "train.sample_every=0", "train.keep_last=5", f"train.output_dir={out}", *extra]


def test_streamed_training_killed_and_resumed_equals_the_uninterrupted_run(shards, tmp_path):
    """2 DataLoader workers, killed after the step-3 checkpoint: the resumed run starts with the
    second worker's partitions, as the uninterrupted one did, and ends with the same weights."""
    from test_cli import assert_same_weights, final_weights

    common = stream_training(shards, tmp_path / "killed", "data.num_workers=2", "train.max_steps=7")
    _, killed = run_together(stream_training(shards, tmp_path / "straight", "data.num_workers=2", "train.max_steps=7"),
                             ["tests/inject.py", "kill-after-save", 3, *common], check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "straight" / "checkpoints" / "step_00000007").is_dir()
    saved = json.loads((tmp_path / "killed" / "checkpoints" / "step_00000003" / "data_state_0.json").read_text())
    assert saved["batches"] == 3 and len(saved["positions"]) == 4
    resumed, = run_together([*common, "--resume"])  # one thread, as the runs above
    assert "(step 3)" in resumed.stdout + resumed.stderr
    assert_same_weights(final_weights(tmp_path / "straight", 7), final_weights(tmp_path / "killed", 7),
                        "after SIGKILL and --resume of a streamed run")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # optimizer.bin, read with weights_only=True
def test_streamed_training_resumes_with_another_process_count(shards, tmp_path):
    """2 gloo processes to step 3, then one process on from their checkpoint: it says how it continues, and the
    learning-rate warmup (6 steps of 2 x 4 = 48 samples) goes on in samples: half done after 3 steps of 8 samples,
    then 4 samples a step (a warmup counted in process-steps would give 3/6 and 4/6 for steps 4 and 5)."""
    from conftest import free_port

    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    warm = ["train.batch_size=4", "train.warmup_steps=6", "train.lr=0.001"]
    run_together([*launch, *stream_training(shards, tmp_path, "train.max_steps=3", *warm)])  # 1 thread each
    step3 = tmp_path / "checkpoints" / "step_00000003"
    states = [json.loads((step3 / f"data_state_{r}.json").read_text()) for r in (0, 1)]
    assert sorted(p for s in states for p in s["positions"]) == ["0", "1", "2", "3"]  # each rank its own partitions
    proc, = run_together([*stream_training(shards, tmp_path, "train.max_steps=5", *warm), "--resume"])
    text = proc.stdout + proc.stderr
    assert "resumed with 1 readers where the checkpoint had 2" in text and "no example is repeated or skipped" in text
    assert "dropout draws anew" in text and (tmp_path / "checkpoints" / "step_00000005").is_dir()
    for step, samples, lr in ((3, 24, 0.001 * 16 / 48), (5, 32, 0.001 * 28 / 48)):
        folder = tmp_path / "checkpoints" / f"step_{step:08d}"
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["samples"] == samples and state["warmup_samples"] == 48
        used = torch.load(folder / "optimizer.bin", weights_only=True)["param_groups"][0]["lr"]  # the last step's
        assert used == pytest.approx(lr, rel=1e-12)


def test_a_map_style_position_maps_to_another_process_count():
    """Checked against Accelerate's own sharding: the examples N processes have seen after k
    micro-batches each are (up to the counted repeats) those M processes see before the new position."""
    from accelerate.data_loader import BatchSamplerShard, SeedableRandomSampler

    from cascade.training.loop import resized_position

    examples, batch = 100, 4

    def seen(processes, batches_each, epoch=0):
        sampler = SeedableRandomSampler(range(examples), generator=torch.Generator(), data_seed=7)
        base = torch.utils.data.BatchSampler(sampler, batch, drop_last=True)
        out = []
        for rank in range(processes):
            sampler.set_epoch(epoch)  # as each process does (iterating advances the sampler's epoch)
            for b in list(BatchSamplerShard(base, processes, rank))[:batches_each]:
                out += b
        return out

    for before, after, k in ((2, 1, 5), (1, 2, 7), (2, 3, 11), (3, 2, 4)):
        position, repeated = resized_position(k, examples, batch, before, after)
        assert position < (examples // batch) // after
        old, new = seen(before, k), seen(after, position)
        assert set(new) <= set(old) and len(old) - len(new) == repeated < after * batch  # resume repeats these
    assert resized_position(13, 100, 4, before=2, now=3) == (8, 8)  # epoch 1 (12 batches each), 8 seen
