import pytest

from cascade.config.loading import load_config
from cascade.config.stages import BaseStageConfig
from cascade.errors import ConfigError
from conftest import ROOT


def differences(given: dict, loaded: dict, where: str) -> list[str]:
    """Every key a YAML file sets whose value in `loaded` (a config as a dict) differs (numbers compared as numbers)."""
    if isinstance(given, dict):
        return [d for key, value in given.items() for d in differences(value, loaded[key], f"{where}.{key}")]
    same = loaded == given or (isinstance(given, (int, float)) and float(loaded) == float(given))
    return [] if same else [f"{where}: file {given!r}, config {loaded!r}"]


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in ROOT.glob("configs/*.yaml")))
def test_every_preset_loads_with_the_values_its_file_gives(name):
    import yaml

    from cascade.config.distill import DistillConfig
    from cascade.config.loading import to_dict
    from cascade.config.one_shot import OneShotConfig
    from cascade.config.stages import LabelStageConfig, SR3StageConfig

    path = ROOT / "configs" / name
    kind = {"sr3": SR3StageConfig, "labels": LabelStageConfig, "one": OneShotConfig,
            "distill": DistillConfig}.get(name.split("_")[0], BaseStageConfig)
    cfg = load_config(kind, path)
    assert differences(yaml.safe_load(path.read_text()), to_dict(cfg), name) == []


def test_a_key_set_in_a_section_keeps_the_defaults_its_parent_gives_the_others():
    from cascade.config.one_shot import OneShotConfig
    from cascade.config.stages import SR3StageConfig

    sr = load_config(SR3StageConfig, None, ["model.base_channels=16"])
    assert (sr.model.base_channels, sr.model.cond_channels, sr.model.sample_size, sr.model.use_aug_level) == (16, 3, 64, True)
    one = load_config(OneShotConfig, None, ["fine.train.max_steps=5"])
    assert one.fine.train.max_steps == 5 and one.fine.scales == [0.75, 8.0] and one.fine.train.lr == 4e-4


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'train\.lrr'"):
        load_config(BaseStageConfig, path)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(BaseStageConfig, write(tmp_path, "trian: {}\n"))


@pytest.mark.parametrize("override, message", [
    ("train.max_steps=-5", "train.max_steps=-5 must be > 0"),
    ("train.max_steps=ten", "train.max_steps='ten' must be an integer"),
    ("model.channel_mult=3", "model.channel_mult=3 must be a list"),
    ("diffusion.schedule=quadratic", "diffusion.schedule='quadratic' is not one of"),
    ("model.sample_size=30", "model.sample_size=30 must be divisible by"),
    ("model.layout=fancy", "model.layout='fancy' is not one of"),
    ("train.lr", "expected key=value"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(BaseStageConfig, None, [override])


@pytest.mark.parametrize("override, message", [
    ("distill.target=data", "distill.target='data' applies to consistency distillation only"),
    ("distill.eta=0", "distill.eta=0.0 applies to consistency distillation only"),
    ("distill.huber_c=0.01", "distill.huber_c=0.01 applies to consistency distillation only"),
    ("distill.target_decay=0.9", "distill.target_decay=0.9 applies to consistency distillation only"),
    ("distill.critic_lr=0.001", "distill.critic_lr=0.001 applies to consistency distillation only"),
    ("distill.final_timestep=99", "distill.final_timestep=99 applies to consistency distillation only"),
    ("distill.phases=4", "distill.phases=4 applies to consistency distillation only"),
])
def test_progressive_distillation_refuses_what_it_would_ignore(override, message):
    from cascade.config.distill import DistillConfig

    with pytest.raises(ConfigError, match=message):
        load_config(DistillConfig, None, ["distill.method=progressive", override])
    load_config(DistillConfig, None, [override])  # the same key is the consistency student's to set
    load_config(DistillConfig, None, ["distill.method=progressive"])  # the defaults pass


def test_the_shipped_distill_config_runs_the_variants_its_comments_give():
    """configs/distill_sr3_photos.yaml with progressive distillation and with consistency training (its comments'
    commands); the teacher step's eta: null is 1 without phases and 0 with them, and is refused where no teacher
    step is taken; phases are a whole number."""
    from cascade.config.distill import DistillConfig

    preset = ROOT / "configs" / "distill_sr3_photos.yaml"
    for overrides in (["distill.method=progressive", "train.max_steps=400"], ["distill.target=data"], []):
        load_config(DistillConfig, preset, overrides)
    assert load_config(DistillConfig, preset, []).distill.teacher_eta() == 1.0
    assert load_config(DistillConfig, preset, ["distill.phases=4"]).distill.teacher_eta() == 0.0
    assert load_config(DistillConfig, preset, ["distill.phases=4", "distill.eta=1"]).distill.teacher_eta() == 1.0
    for overrides, message in ((["distill.target=data", "distill.eta=0.5"], "distill.eta=0.5 is the teacher's step's"),
                               (["distill.phases=true", "distill.steps=1"], "distill.phases=True must be an integer"),
                               (["distill.phases=0"], "distill.phases=0 must be a whole number of phases")):
        with pytest.raises(ConfigError, match=message):
            load_config(DistillConfig, preset, overrides)


def test_size_check_follows_the_layout():
    # [1, 2, 2]: "standard" halves twice (multiple 4), "efficient" three times (multiple 8)
    assert load_config(BaseStageConfig, None, ["model.sample_size=36"]).model.layout == "standard"
    with pytest.raises(ConfigError, match="model.sample_size=36 must be divisible by 8"):
        load_config(BaseStageConfig, None, ["model.sample_size=36", "model.layout=efficient"])


def test_overrides_are_typed():
    cfg = load_config(BaseStageConfig, None, ["train.lr=1e-4", "model.channel_mult=[1,2]", "data.random_flip=false",
                                              "model.num_classes=7"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.channel_mult == [1, 2]
    assert cfg.data.random_flip is False
    assert cfg.model.num_classes == 7


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(BaseStageConfig, "nope.yaml")


def test_sr3_presets_load_and_sizes_are_checked(root):
    from cascade.config.stages import SR3StageConfig

    presets = sorted((root / "configs").glob("sr3_*.yaml"))
    assert len(presets) >= 4
    for path in presets:
        cfg = load_config(SR3StageConfig, path)
        assert cfg.model.sample_size % cfg.sr.scale == 0 and cfg.model.cond_channels == 3
    with pytest.raises(ConfigError, match="sr.scale=3 must divide model.sample_size=64"):
        load_config(SR3StageConfig, root / "configs" / "sr3_photos.yaml", ["sr.scale=3"])
    with pytest.raises(ConfigError, match="model.cond_channels=0 must equal model.in_channels"):
        load_config(SR3StageConfig, None, ["model.cond_channels=0"])
    with pytest.raises(ConfigError, match="sr.scale=1 must be an integer >= 2"):
        load_config(SR3StageConfig, None, ["sr.scale=1"])


def test_the_one_shot_preset_file_states_the_built_in_defaults():
    """`train/one_shot.py` without --config trains what configs/one_shot.yaml says (the README's command gives no
    --config): every key the file sets equals the dataclass default, the fine stage's sampler among them."""
    import yaml

    from cascade.config.loading import to_dict
    from cascade.config.one_shot import OneShotConfig

    given = yaml.safe_load((ROOT / "configs" / "one_shot.yaml").read_text())
    built_in = to_dict(OneShotConfig())
    assert differences(given, built_in, "one_shot") == []
    assert (built_in["fine"]["sample"]["sampler"], built_in["fine"]["sample"]["steps"]) == ("ddim", 10)
