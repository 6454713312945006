"""Label-map stages (pix2pixHD's job): maps resized nearest, guidance on the null map, a 2-stage
cascade trained, saved, synthesized, tiled and edited through the CLI, and the paired data's errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.config.loading import load_config
from cascade.config.sections import DataConfig
from cascade.config.stages import LabelStageConfig
from cascade.data.label_maps import boundaries, dilate, resize
from cascade.data.layouts import layout
from cascade.data.paired import load_pairs, write_pairs
from cascade.diffusion.sampling import guided
from cascade.errors import ConfigError, DataError
from conftest import randomize, run, run_in_process, tiny_unet

TINY = """
model: {{sample_size: {size}, cond_channels: {cond}, use_aug_level: {sr}, num_labels: 6, label_embed_dim: 4,
        use_instances: true, base_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_resolutions: [4],
        head_channels: 8, dropout: 0.0}}
diffusion: {{schedule: cosine, prediction_type: v_prediction}}
data: {{source: layouts, crop_scale: [0.5, 1.0], epoch_size: 16}}
train: {{batch_size: 4, max_steps: 2, warmup_steps: 1, save_every: 2, sample_every: 2, log_every: 1}}
sample: {{steps: 2, preview_per_class: 2, guidance_scale: 1.5}}
"""


def test_label_maps_are_resized_like_pils_nearest_and_no_new_ids_appear():
    ids = np.random.default_rng(0).choice([0, 3, 7, 200], size=(37, 53)).astype(np.uint8)
    for height, width in ((16, 90), (100, 20), (37, 53), (5, 7)):
        ours = resize(torch.from_numpy(ids).long()[None, None], (height, width))[0, 0].numpy()
        pil = np.asarray(Image.fromarray(ids).resize((width, height), Image.NEAREST))
        np.testing.assert_array_equal(ours, pil)
        assert set(np.unique(ours)) <= {0, 3, 7, 200}


def test_instance_boundaries_are_pix2pixhds_edges():
    instances = torch.zeros(1, 1, 6, 8, dtype=torch.long)
    instances[..., 5:] = 1  # a vertical border between columns 4 and 5
    instances[..., 4:, :2] = 2  # a corner region: borders at rows 3/4 and columns 1/2
    edge = boundaries(instances)[0, 0]
    expected = torch.zeros(6, 8)
    expected[:, 4:6] = 1
    expected[3:5, :2] = expected[4:, 1:3] = 1
    assert torch.equal(edge, expected)


def test_guidance_contrasts_the_map_with_the_learned_null_map():
    unet = randomize(tiny_unet(sample_size=8, num_classes=0, num_labels=5, label_embed_dim=3, use_instances=True)).eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([10, 500])
    maps = torch.randint(0, 5, (2, 1, 8, 8), generator=g)
    edges = boundaries(torch.randint(0, 3, (2, 1, 8, 8), generator=g))
    with torch.no_grad():
        conditional = unet(x, t, label_map=maps, boundary=edges)
        unconditional = unet(x, t)  # no map: the null map, no boundaries
        assert torch.equal(unet(x, t, label_map=torch.full_like(maps, 5)), unconditional)
        assert not torch.allclose(conditional, unconditional)
        assert guided(unet, 1.0, None, unet.null_label) is unet  # scale 1: the conditional model itself
        for scale in (0.0, 2.5):
            out = guided(unet, scale, None, unet.null_label)(x, t, label_map=maps, boundary=edges)
            torch.testing.assert_close(out, unconditional + scale * (conditional - unconditional), atol=1e-5, rtol=1e-5)


def test_training_drops_whole_maps_with_their_boundaries_and_keeps_the_rest():
    from cascade.kinds.labels import LabelMap

    config = tiny_unet(num_classes=0, num_labels=6, use_instances=True).config
    maps = torch.randint(0, 6, (64, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    maps[:, :, 0, 0] = 6  # an unlabelled corner must not read as a dropped map
    instances = torch.arange(64).view(1, 1, 8, 8).expand(64, -1, -1, -1)  # every pixel its own instance
    batch = {"image": torch.zeros(64, 3, 8, 8), "label_map": maps, "instances": instances, "seed": torch.arange(64)}
    from cascade.diffusion import rng

    cond = LabelMap().batch_conditioning(config, batch, 0.3, rng.example_generators(batch["seed"]))
    dropped = (cond["label_map"] == 6).flatten(1).all(1)
    assert 5 < dropped.sum() < 35  # about 30% of 64
    assert torch.equal(cond["label_map"][~dropped], maps[~dropped])
    assert (cond["boundary"][dropped] == 0).all() and (cond["boundary"][~dropped] == 1).all()


@pytest.fixture(scope="module")
def label_cascade(tmp_path_factory):
    """A tiny 2-stage label-map cascade (16 px base -> 32 px SR3), trained 2 steps each on the built-in layouts."""
    root = tmp_path_factory.mktemp("labels")
    folders = []
    for name, size, sr in (("base", 16, None), ("sr", 32, "{scale: 2}")):
        preset = root / f"{name}.yaml"
        preset.write_text(TINY.format(size=size, cond=3 if sr else 0, sr="true" if sr else "false")
                          + (f"sr: {sr}\n" if sr else ""))
        proc = run_in_process("train/label_map.py", "--config", preset, f"train.output_dir={root / name}")
        assert "label IDs" in proc.stdout + proc.stderr
        assert (root / name / "samples" / "step_00000002.png").is_file()  # (map | sample | truth) preview
        folders.append(root / name / "pipeline")
    run_in_process("-m", "cascade", "assemble", root / "cascade", *folders)
    return root


def test_a_label_cascade_distils_with_its_guidance_baked_in(label_cascade, tmp_path):
    """train/distill.py on the label-map cascade: both stages get students (LabelMap and LabelSR3), each on its
    teacher's recorded data, the guided base's scale baked in (sampled unguided, 1 evaluation per step), each with
    a critic that sees the label map (and the upsampler's input)."""
    run_in_process("train/distill.py", "--teacher", label_cascade / "cascade", "train.max_steps=2",
                   "train.batch_size=2", "distill.adversarial=0.1", f"train.output_dir={tmp_path / 'student'}")
    teacher = Pipeline.from_pretrained(label_cascade / "cascade")
    student = Pipeline.from_pretrained(tmp_path / "student" / "pipeline")
    assert [s.kind.name for s in student.stages] == ["label_map", "label_sr3"]
    for t, s in zip(teacher.stages, student.stages):
        assert s.defaults.sampler == "lcm" and s.defaults.guidance_scale == 1 and s.network_evaluations() == 4
        assert s.origin["distilled"]["guidance_scale"] == (t.defaults.guidance_scale if t.guided else 1.0)
        assert s.origin["distilled"]["data"] == t.origin["trained"]["data"]
        assert s.origin["distilled"]["adversarial"] == 0.1
    assert teacher.stages[0].guided and teacher.stages[0].network_evaluations() == 2 * teacher.stages[0].defaults.steps
    _, ids, instances = layout(5, (32, 48), split="test")
    out = student(label_maps=ids, instances=instances, num_images=2, seed=0, output_type="pt", progress=False)
    assert out.shape == (2, 3, 32, 48) and torch.isfinite(out).all()


def test_a_label_cascade_trains_synthesizes_tiles_edits_and_reloads(label_cascade, tmp_path):
    pipe = Pipeline.from_pretrained(label_cascade / "cascade")
    assert [s.kind.name for s in pipe.stages] == ["label_map", "label_sr3"]
    assert pipe.stages[0].kind.label_names == ("sky", "water", "foliage", "grass", "brick", "gravel")
    # a user's map of a size the stages do not take: padded for them, the output cropped back
    _, ids, instances = layout(5, (38, 54), split="test")
    outs = pipe(label_maps=ids, instances=instances, num_images=2, seed=3, output_type="pt", progress=False,
                return_intermediates=True)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 19, 27), (2, 3, 38, 54)]
    assert not torch.equal(outs[-1][0], outs[-1][1])  # two samples of one map
    tiled = pipe(label_maps=ids, instances=instances, num_images=2, seed=3, output_type="pt", progress=False,
                 tile_size=16, overlap=4)
    assert tiled.shape == outs[-1].shape
    # the saved pipeline samples what it sampled before it was saved
    pipe.save_pretrained(tmp_path / "again")
    again = Pipeline.from_pretrained(tmp_path / "again")
    assert torch.equal(again(label_maps=ids, instances=instances, num_images=2, seed=3, output_type="pt",
                             progress=False), outs[-1])

    # the CLI: a map file in, --num samples out, then an edit of one region of the first
    Image.fromarray(ids).save(tmp_path / "labels.png")
    Image.fromarray(instances.astype(np.uint8)).save(tmp_path / "inst.png")
    cli = ["-m", "cascade", "synthesize", tmp_path / "labels.png", tmp_path / "out.png", "--pipeline",
           label_cascade / "cascade", "--instances", tmp_path / "inst.png", "--size", "60x36", "--tile-size", "0"]
    run_in_process(*cli, "--num", "2")
    first = np.asarray(Image.open(tmp_path / "out_0.png"))
    assert first.shape == (36, 60, 3) and (tmp_path / "out_1.png").is_file()
    mask = np.zeros((36, 60), np.uint8)
    mask[10:20, 30:45] = 1
    Image.fromarray(mask).save(tmp_path / "mask.png")
    edited_map = ids.copy()
    edited_map[...] = np.where(edited_map == 0, 4, edited_map)  # sky -> brick (the mask says where to redo)
    Image.fromarray(edited_map).save(tmp_path / "labels.png")
    run_in_process(*cli, "--edit-from", tmp_path / "out_0.png", "--mask", tmp_path / "mask.png", "--margin", "3",
                   "--seed", "9")
    edited = np.asarray(Image.open(tmp_path / "out.png"))
    region = dilate(torch.from_numpy(mask)[None, None] > 0, 3)[0, 0].numpy()
    assert np.array_equal(edited[~region], first[~region])  # kept bit for bit outside the mask and its margin
    assert (edited[region] != first[region]).any()
    # bad input: one line naming the value
    bad = run_in_process(*cli, "--edit-from", tmp_path / "out_0.png", "--mask", tmp_path / "labels.png",
                         "--size", "30x18", check=False)
    assert bad.returncode == 2 and "is 60x36, the label map 30x18" in bad.stderr.strip().splitlines()[-1]
    bad = run_in_process(*cli[:-4], "--size", "0x5", check=False)
    assert bad.returncode == 2 and "--size 0x5" in bad.stderr


def test_paired_folders_and_label_maps_fail_with_the_file_named(tmp_path):
    write_pairs(tmp_path / "ok", (layout(i, (24, 32)) for i in range(3)))
    cfg = DataConfig(source="paired", path=str(tmp_path / "ok"))
    source = load_pairs(cfg, 6, None)
    image, ids, inst = source.load(1)
    assert image.size == (32, 24) and ids.shape == inst.shape == (24, 32) and len(source) == 3

    def fails(mutate, message, num_labels=6, ignore=None):
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        write_pairs(folder, (layout(i, (24, 32)) for i in range(2)))
        mutate(folder)
        with pytest.raises(DataError, match=message):
            src = load_pairs(DataConfig(source="paired", path=str(folder)), num_labels, ignore)
            for i in range(len(src)):
                src.load(i)

    fails(lambda f: (f / "labels" / "00001.png").unlink(), r"00001.png: no label map .*labels/00001")
    fails(lambda f: (f / "images" / "00000.png").unlink(), r"labels/00000.png: no image")
    fails(lambda f: (f / "instances" / "00000.png").unlink(), r"00000.png: no instance map")
    fails(lambda f: Image.new("L", (10, 10)).save(f / "labels" / "00000.png"),
          r"labels/00000.png: label map is 10x10, its image .*32x24")
    fails(lambda f: Image.new("L", (32, 24), 9).save(f / "labels" / "00000.png"),
          r"labels/00000.png: label IDs \[9\] outside \[0, 6\)")
    fails(lambda f: Image.new("RGB", (32, 24)).save(f / "labels" / "00000.png"), r"00000.png: .*not mode RGB")
    fails(lambda f: Image.new("L", (32, 24), 6).save(f / "labels" / "00000.png"),  # == num_labels, with an ignore ID
          r"label IDs \[6\] outside \[0, 6\) for num_labels=6, ignore_id 255", ignore=255)
    # an "unlabelled" ID is read as the null map where it is configured
    folder = tmp_path / "ignore"
    write_pairs(folder, (layout(i, (24, 32)) for i in range(1)))
    Image.new("L", (32, 24), 255).save(folder / "labels" / "00000.png")
    _, ids, _ = load_pairs(DataConfig(source="paired", path=str(folder)), 6, 255).load(0)
    assert (ids == 6).all()
    with pytest.raises(ConfigError, match="data.source='photos' must be 'layouts'"):
        load_config(LabelStageConfig, None, ["data.source=photos"])
    with pytest.raises(ConfigError, match="model.cond_channels=0 must be 3"):
        load_config(LabelStageConfig, None, ["sr.scale=2"])


def test_train_label_map_script_runs_as_a_user_runs_it(tmp_path):
    """The script as a subprocess: a bad value stops with one line naming it."""
    proc = run("train/label_map.py", "model.num_labels=5", f"train.output_dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: layouts: has 6 labels (sky, water, foliage, grass, brick, "
                                                    "gravel) but model.num_labels=5")
    assert not (tmp_path / "checkpoints").exists()


def test_eval_label_map_scores_a_pipeline_against_the_segmenters_real_data_bound(label_cascade, tmp_path):
    import json

    proc = run_in_process("eval/label_map.py", "--pipeline", label_cascade / "cascade", "--num", "6", "--samples", "2",
                          "--diversity-maps", "2", "--train-pairs", "8", "--epochs", "1", "--out", tmp_path)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "label_map.json").read_text())
    assert report["num"] == 6 and report["size"] == 32 and len(report["iou"]) == 6
    for key in ("miou", "pixel_accuracy", "miou_real", "pixel_accuracy_real"):
        assert 0 <= report[key] <= 1
    assert report["fid"] > 0 and report["fid_real_train"] > 0 and report["diversity"] > 0
    assert (tmp_path / "segmenter" / "config.json").is_file()
    assert Image.open(tmp_path / "label_map.png").width > 4 * 32  # map | 2 samples | real


def test_bench_synthesis_times_an_output_with_the_stages_sampling_flags(label_cascade, tmp_path):
    """eval/bench_synthesis.py: one row per size, in a fresh process, sampled with `--sampler` / `--steps` /
    `--final-timestep` in place of the stages' stage.json (the row names what each stage ran); a bad flag is refused
    in one line before any run."""
    import json

    run_in_process("eval/bench_synthesis.py", "--pipeline", label_cascade / "cascade", "--sizes", "48x32",
                   "--tile-size", "32", "--sampler", "0=lcm", "--steps", "0=2", "--final-timestep", "0=99",
                   "--sampler", "1=ddim", "--steps", "1=3", "--out", tmp_path / "b")
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["output"] for r in rows] == ["48x32"]
    teacher = Pipeline.from_pretrained(label_cascade / "cascade")
    w = [s.defaults.guidance_scale for s in teacher.stages]
    assert rows[0]["stages"] == [f"lcm/2/w{w[0]:g}/t99", f"ddim/3/w{w[1]:g}"]
    assert "48x32" in (tmp_path / "b.md").read_text()
    proc = run_in_process("eval/bench_synthesis.py", "--pipeline", label_cascade / "cascade", "--sizes", "48x32",
                          "--steps", "0=0", "--out", tmp_path / "c", check=False)
    assert proc.returncode != 0 and "--steps 0=0" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c.json").exists()


def test_label_stages_chain_whatever_their_crops_and_broadcast_one_map():
    from cascade.config.sections import DiffusionConfig, SampleConfig
    from cascade.diffusion.schedule import make_noise_scheduler
    from cascade.inference.stage import Stage
    from cascade.kinds.labels import LabelMap, LabelSR3
    from conftest import tiny_stage

    schedule = make_noise_scheduler(DiffusionConfig(schedule="cosine", prediction_type="v_prediction"))

    def stage(kind, size, cond):
        unet = randomize(tiny_unet(sample_size=size, num_classes=0, num_labels=6, cond_channels=cond,
                                   use_aug_level=bool(cond)), scale=0.05).eval()
        return Stage(unet, schedule, kind, SampleConfig(steps=2, guidance_scale=2.0))

    base, up = stage(LabelMap(), 16, 0), stage(LabelSR3(scale=2), 16, 3)  # the upsampler trained on 16 px crops too
    pipe = Pipeline([base, up])  # label-map stages sample at the map's size: no crop-size check
    with pytest.raises(ValueError, match="stage 1 upsamples 8 px -> 16 px, but stage 0 outputs 32 px"):
        Pipeline([tiny_stage(32), tiny_stage(16, scale=2)])  # other kinds are still checked
    one = torch.randint(0, 6, (1, 1, 12, 20))
    out = base.sample(label_map=one, num_images=3, seed=0, progress=False)
    assert out.shape == (3, 3, 12, 20) and not torch.equal(out[0], out[1])
    assert pipe(label_maps=one, num_images=2, seed=0, output_type="pt", progress=False).shape == (2, 3, 12, 20)
    with pytest.raises(ValueError, match="2 label maps for 3 images"):
        base.sample(label_map=one.expand(2, -1, -1, -1), num_images=3, progress=False)
