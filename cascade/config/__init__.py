"""Typed configuration: dataclasses with a comment per field, YAML presets, `key=value` overrides.

A config file is a YAML mapping whose sections mirror the dataclasses; unknown keys, values of the
wrong type and impossible values are rejected with a one-line `ConfigError` that names the file and
the dotted key at fault (cascade.config.loading).

- sections.py: what every stage shares (model, diffusion, data, train, sample)
- stages.py: base, SR3 and label-map stages
- one_shot.py: a cascade trained on one photo
- distill.py: a few-step student of a trained stage or pipeline
- loading.py: YAML + overrides -> a checked config; checks.py: the check the sections use
"""

from .distill import DistillConfig, DistillSection
from .loading import from_dict, load_config, save_config, to_dict
from .one_shot import OneShotConfig, OneShotSRStageConfig, SceneConfig, SceneStageConfig
from .sections import DataConfig, DiffusionConfig, ModelConfig, SampleConfig, TrainConfig
from .stages import BaseStageConfig, LabelConfig, LabelStageConfig, SR3StageConfig, SRConfig

__all__ = ["BaseStageConfig", "DataConfig", "DistillConfig", "DistillSection", "DiffusionConfig", "LabelConfig", "LabelStageConfig", "ModelConfig",
           "OneShotConfig", "OneShotSRStageConfig", "SR3StageConfig", "SRConfig", "SampleConfig", "SceneConfig",
           "SceneStageConfig", "TrainConfig", "from_dict", "load_config", "save_config", "to_dict"]
