import re

import numpy as np
import pytest
import torch
from PIL import Image

from cascade.config.sections import DataConfig
from cascade.data import sources as data
from cascade.data.crops import CropDataset, crop_box, random_resized_crop
from cascade.errors import DataError
from cascade.io.images import pil_to_signed, to_rgb


def test_to_rgb_modes():
    gray = Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L")
    assert np.asarray(to_rgb(gray)).tolist() == [[[0] * 3, [128] * 3, [255] * 3]]
    # 16-bit: rescaled to 8 bits, not clipped (convert("RGB") would make 65535 -> 255 but 1000 -> 255 too)
    deep = Image.fromarray(np.array([[0, 32896, 65535]], np.uint16))
    assert deep.mode.startswith("I;16")
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 128, 255]
    # RGBA: transparent pixels become white, opaque ones keep their colour
    rgba = Image.fromarray(np.array([[[255, 0, 0, 255], [0, 255, 0, 0]]], np.uint8), "RGBA")
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    palette = Image.fromarray(np.array([[10, 200]], np.uint8), "L").convert("P")
    assert to_rgb(palette).mode == "RGB"


def test_pil_to_tensor_range():
    t = pil_to_signed(Image.fromarray(np.array([[[0, 255, 128]]], np.uint8)))
    assert t.shape == (3, 1, 1)
    assert t.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)


def test_builtin_photos_train_and_test_are_disjoint():
    train, test = data.load_source(DataConfig(), "train"), data.load_source(DataConfig(), "test")
    assert len(train) == len(test) == len(train.class_names) == 10
    for a, b in zip(train.records, test.records):
        assert a.height == b.height and a.width > 3 * b.width  # the right 20% is held out
    dataset = CropDataset(train, 16, DataConfig(crop_scale=[0.2, 0.5], epoch_size=12))
    item = dataset[3]
    assert item["image"].shape == (3, 16, 16) and item["label"] == 3
    assert -1 <= item["image"].min() and item["image"].max() <= 1


def make_folder(root, bad=False):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(root / "dogs" / "deep.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(root / "cats" / "alpha.png")
    if bad:
        (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")


def test_imagefolder_classes_and_modes(tmp_path):
    make_folder(tmp_path)
    source = data.load_source(DataConfig(source="imagefolder", path=str(tmp_path)))
    assert source.class_names == ["cats", "dogs"] and len(source) == 8
    dataset = CropDataset(source, 8, DataConfig(source="imagefolder", path=str(tmp_path)))
    batch = [dataset[i] for i in range(len(dataset))]
    assert all(b["image"].shape == (3, 8, 8) for b in batch)
    assert sorted(b["label"] for b in batch) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_undecodable_file_is_named(tmp_path):
    make_folder(tmp_path, bad=True)
    cfg = DataConfig(source="imagefolder", path=str(tmp_path))
    dataset = CropDataset(data.load_source(cfg), 8, cfg)
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        for i in range(len(dataset)):
            dataset[i]


def test_undecodable_file_skipped_with_a_count(tmp_path, capsys):
    make_folder(tmp_path, bad=True)
    cfg = DataConfig(source="imagefolder", path=str(tmp_path), on_bad_image="skip")
    dataset = CropDataset(data.load_source(cfg), 8, cfg)
    capsys.readouterr()
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) == len(dataset) and len(dataset.skipped) == 1
    # One line of ours, not a `warnings` line prefixed by the path of a torch-internal file
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"warning: skipping .*broken\.png.*\[1 skipped so far\]", lines[0]), lines


def test_missing_folder_and_class_mismatch(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        data.load_source(DataConfig(source="imagefolder", path=str(tmp_path / "nope")))
    make_folder(tmp_path)
    source = data.load_source(DataConfig(source="imagefolder", path=str(tmp_path)))
    with pytest.raises(DataError, match="has 2 classes .* but model.num_classes=10"):
        data.check_num_classes(source.name, source.class_names, 10)
    data.check_num_classes(source.name, source.class_names, 0)  # unconditional: any number of classes


def test_random_resized_crop_upsamples_small_images():
    small = Image.fromarray(np.zeros((5, 7, 3), np.uint8))
    crop = random_resized_crop(small, 16, (0.5, 1.0), generator=torch.Generator().manual_seed(0))
    assert crop.size == (16, 16)


def test_held_out_photo_crops_have_the_training_scale():
    # crop_scale is a fraction of the whole photo's shorter side in both splits, so the narrow held-out
    # strip gives crops of the training scale (clipped to the strip), not tiny regions blown up
    train, test = data.load_source(DataConfig(), "train"), data.load_source(DataConfig(), "test")
    assert train.crop_reference == test.crop_reference
    assert test.reference(0) == 512 and test.records[0].size == (103, 512)  # astronaut: 512x512, right 20%
    g = torch.Generator().manual_seed(0)
    sides = [crop_box(103, 512, (0.15, 0.4), g, reference=512)[2] for _ in range(200)]
    assert min(sides) >= round(0.15 * 512) and max(sides) == 103  # 77..103 px, never the strip-relative 15..41
    boxes = [crop_box(300, 200, (0.5, 0.5), g) for _ in range(50)]
    assert all(side == 100 and 0 <= left <= 200 and 0 <= top <= 100 for left, top, side in boxes)


def test_one_image_folder_gives_an_epoch_of_distinct_crops(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "one").mkdir()
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "one" / "photo.png")
    cfg = DataConfig(source="imagefolder", path=str(tmp_path / "one"), crop_scale=[0.2, 0.4], epoch_size=20)
    source = data.load_source(cfg)
    assert len(source) == 1 and source.class_names == ["all"]
    dataset = CropDataset(source, 8, cfg)
    assert len(dataset) == 20
    crops = torch.stack([dataset[i]["image"] for i in range(20)])
    assert len({tuple(c.flatten()[:16].tolist()) for c in crops}) > 15  # random crops, not one repeated


def test_non_image_files_are_ignored_and_empty_classes_counted(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("L", (12, 9), 100).save(tmp_path / cls / "x.png")  # grayscale, smaller than any crop
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "c").mkdir()  # an empty class folder is no class at all
    source = data.load_source(DataConfig(source="imagefolder", path=str(tmp_path)))
    assert len(source) == 2 and source.class_names == ["a", "b"]
    crops = CropDataset(source, 16, DataConfig(source="imagefolder", path=str(tmp_path)))
    assert crops[0]["image"].shape == (3, 16, 16)  # grayscale expanded, upsampled to the crop size
    with pytest.raises(DataError, match="has 2 classes"):
        data.check_num_classes(source.name, source.class_names, 3)


def test_picture_row_labels_wrap_to_the_columns_measured_width():
    """Labels of picture rows (cascade.io.images.label_rows) wrap by the font's own measure: every line fits the
    column, words stay whole where they fit, a word wider than the column is cut, and no text is lost."""
    from PIL import ImageDraw, ImageFont

    from cascade.io.images import label_rows, wrap_to_width

    font, draw = ImageFont.load_default(), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    length = lambda line: draw.textlength(line, font=font)  # noqa: E731
    text = "blurred scene + upsamplers (WWWWWWWWWWWWWWWWWWWWWW) iiiiiiiiiiiiiiiiiiii"
    lines = wrap_to_width(text, length, 100)
    assert all(length(line) <= 100 for line in lines) and len(lines) > 2
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert lines[0] == "blurred scene +"  # whole words while they fit
    assert wrap_to_width("WWWW", lambda s: 6 * len(s), 12) == ["WW", "WW"]
    grid = Image.new("RGB", (40, 100), (0, 0, 0))
    out = label_rows(grid, ["WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW"], row_height=96, width=60)
    ink = np.asarray(out)[:, :60].min(axis=2) < 128
    assert ink.any() and not ink[:, 56:].any()  # the text stays inside its column (4 px margins)
