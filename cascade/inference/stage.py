"""One stage of a cascade: a trained UNet, its noise schedule, its kind and its sampling defaults.

What the stage is (fixed when it was trained) lives in `kind` (cascade.kinds: base or SR3, and how it is conditioned)
and `class_names`; how it samples by default is a `SampleConfig` (`stage.defaults`), which a call overrides field by
field without changing the stage.

Saved as a folder:

    stage.json                 {"format": "cascade-stage", "version": 2, "kind": {"name": "sr3", ...},
                                "class_names": [...], "sample": {sampler, steps, guidance_scale, ...},
                                "origin": {"trained": {...}, "distilled": {...}},
                                "erf": {"radius", "size", ..., "weights": hash}}   (optional)
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json   the training noise schedule (samplers are built from it)

`origin` says where the weights came from: the training run (steps, data, the resolved config, time) and, for a
few-step student, its distillation (teacher, method, iterations); `describe` and the model card show it. `erf` is the
UNet's measured effective receptive field (the tiles' default overlap), measured when training exports a stage that
can be tiled and kept with the hash of the weights it was measured on: a tiled run reads it instead of measuring again
(a second or more per stage), and measures when the weights differ from those or it is absent.
Folders written before kinds existed (a flat stage.json with `scale`, `residual`, ...) still load, and so does a
stage by Hub id (`Stage.from_pretrained("org/name")`, cascade.inference.hub).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..config.sections import SampleConfig
from ..diffusion import rng
from ..diffusion.sampling import STUDENT_SAMPLERS, check_resample, constrained, guided, make_sampler, off_phases
from ..errors import CheckpointError
from ..io.atomic import replacing_folder
from ..kinds.base import Base, Conditioning, StageKind
from ..kinds.sr3 import SR3
from ..models.unet import UNet
from ..models.weights import weights_hash
from .hub import local_folder
from .projections import consistent_with, keeping, with_rows
from .tiling import TiledDenoiser, effective_receptive_field

STAGE_FILE = "stage.json"
STAGE_VERSION = 2  # stage.json format versions this code reads


@dataclass(frozen=True)
class Tiling:
    """Denoise jointly in overlapping tiles of `size` output pixels, `batch` tiles per network call,
    keeping the full-size state on the CPU (cascade.inference.tiling); `overlap` None: the stage's ERF radius."""

    size: int
    overlap: int | None = None
    batch: int = 8


class Stage:
    """One model of the cascade. `sample` draws images; `save_pretrained` / `from_pretrained` keep it."""

    def __init__(self, unet: UNet, noise_scheduler: DDPMScheduler, kind: StageKind | None = None,
                 defaults: SampleConfig | None = None, class_names=(), origin: dict | None = None):
        self.unet, self.noise_scheduler = unet, noise_scheduler
        self.kind = kind if kind is not None else Base()
        self.origin = dict(origin or {})  # where the weights came from (module docstring); JSON-serialisable
        self.defaults = self.checked(defaults or SampleConfig())  # a final timestep off the grid: refused at load
        self.class_names = list(class_names)
        self.erf: dict | None = None  # the UNet's effective receptive field, measured by tile_overlap()
        self._erf_weights: str | None = None  # the hash of the weights `erf` was measured on (None: set by hand)
        config = unet.config
        if self.kind.cond_channels(config.in_channels) != config.cond_channels:
            raise ValueError(f"a {self.kind.name} stage needs a UNet with cond_channels="
                             f"{self.kind.cond_channels(config.in_channels)}, not {config.cond_channels}")
        if self.class_names and len(self.class_names) != config.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a UNet with num_classes={config.num_classes}")

    @property
    def resolution(self) -> int:
        """The output size the stage was trained at."""
        return self.unet.config.sample_size

    @property
    def input_resolution(self) -> int:
        """The input size the stage was trained on (kinds that take an input)."""
        return self.resolution // self.kind.scale

    @property
    def is_upsampler(self) -> bool:
        return self.kind.takes_input

    @property
    def size_multiple(self) -> int:
        """Output sides must be multiples of this (2 to the number of the UNet's downsamplings)."""
        return self.unet.size_multiple

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def settings(self, overrides: dict | None = None, where: str | None = None) -> SampleConfig:
        """The sampling settings of one call: the defaults with `overrides` applied (checked; a ValueError
        starts with `where`, default "<kind> stage settings")."""
        where = where or f"{self.kind.name} stage settings"
        return self.checked(self.defaults.replace(overrides, where=where), where)

    def checked(self, s: SampleConfig, where: str = "sample") -> SampleConfig:
        """`s`, whose students' sampler's final timestep lies on the grid it was distilled on (else ValueError); a
        phased student sampled off the jumps it learned (`off_phases`) gets a warning."""
        if s.final_timestep is not None and s.sampler in STUDENT_SAMPLERS:
            try:
                make_sampler(s.sampler, self.noise_scheduler.config, final_timestep=s.final_timestep)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        record = self.origin.get("distilled") if self.kind.iterative else None
        off = isinstance(record, dict) and off_phases(record.get("phase_edges"), s.sampler, s.steps,
                                                      self.noise_scheduler.config, s.final_timestep)
        if off:
            warnings.warn(f"a phased student sampled off its phases ({off}); its quality is unmeasured there")
        return s

    def with_defaults(self, changes: dict | None) -> "Stage":
        """The same model with other sampling defaults (a new Stage; this one is unchanged)."""
        stage = Stage(self.unet, self.noise_scheduler, self.kind, self.settings(changes), self.class_names, self.origin)
        stage.erf, stage._erf_weights = self.erf, self._erf_weights
        return stage

    @property
    def guided(self) -> bool:
        """Whether a guidance scale other than 1 applies (the UNet has classes or label maps to contrast)."""
        return bool(self.unet.config.num_classes or self.unet.config.num_labels)

    def timesteps(self, settings: dict | None = None) -> list[int]:
        """The training timesteps one call with `settings` (default: the stage's own) evaluates its network at."""
        s = self.settings(settings)
        scheduler = make_sampler(s.sampler, self.noise_scheduler.config, final_timestep=s.final_timestep)
        check_resample(scheduler, s.resample)
        scheduler.set_timesteps(s.steps)
        return [int(t) for t in scheduler.timesteps]

    def network_evaluations(self, settings: dict | None = None) -> int:
        """Network evaluations per image of one call with `settings` (default: the stage's own): the
        sampler's timesteps for `steps` (a second-order sampler's count twice), each but the last done
        `resample` times, doubled when guided; 1 for a one-evaluation kind."""
        if not self.kind.iterative:
            return 1
        s, n = self.settings(settings), len(self.timesteps(settings))
        return (n + (s.resample - 1) * (n - 1)) * (2 if s.guidance_scale != 1 and self.guided else 1)

    def label_tensor(self, class_labels, n: int | None) -> torch.Tensor | None:
        """Class indices or names -> long tensor [N]; None for an unconditional model."""
        num_classes = self.unet.config.num_classes
        if class_labels is None:
            return None if not num_classes else torch.full((n or 1,), self.unet.null_class, dtype=torch.long)
        if not num_classes:
            raise ValueError("class_labels given, but this stage is unconditional (num_classes=0)")
        labels = []
        for label in (class_labels.tolist() if isinstance(class_labels, torch.Tensor) else class_labels):
            if isinstance(label, str):
                if label not in self.class_names:
                    raise ValueError(f"unknown class name {label!r}; known: {', '.join(self.class_names)}")
                label = self.class_names.index(label)
            if not 0 <= int(label) < num_classes:
                raise ValueError(f"class label {label} out of range [0, {num_classes})")
            labels.append(int(label))
        return torch.tensor(labels, dtype=torch.long)

    def tile_overlap(self) -> int:
        """Default overlap of tiles: the UNet's measured ERF radius, rounded up to `size_multiple`.
        Measured once per stage (cascade.inference.tiling.effective_receptive_field, at twice the training size, with
        the kind's conditioning) and cached while the weights are those it was measured on (`checked_erf`): `self.erf`
        keeps it, and stage.json keeps it with their hash (training measures it on export)."""
        if self.checked_erf() is None:
            t = self.noise_scheduler.config.num_train_timesteps
            size = 2 * self.resolution

            def cond(generator):
                extra = self.kind.erf_inputs(self.unet.config, size, generator, self.device)
                if self.unet.config.num_classes:
                    extra["class_labels"] = torch.full((1,), self.unet.null_class, device=self.device)
                return extra

            iterative = self.kind.iterative  # one-evaluation kinds only ever see t = 0 and x_t = 0
            self.erf = effective_receptive_field(self.unet, size, [t // 10, t // 2, 9 * t // 10] if iterative else [0],
                                                 cond, self.kind.spatial, seeds=4, zero_x=not iterative)
            self._erf_weights = weights_hash(self.unet)
        m = self.size_multiple
        return max(m, math.ceil(self.erf["radius"] / m) * m)

    def checked_erf(self) -> dict | None:
        """The ERF of the weights as they are now, or None: stage.json's record, or an earlier measurement, is
        dropped once the weights differ from those it was measured on (an ERF set by hand is kept)."""
        if self.erf is not None and self._erf_weights is not None and self._erf_weights != weights_hash(self.unet):
            self.erf = self._erf_weights = None
        return self.erf

    def tile_geometry(self, tile_size: int, overlap: int | None) -> tuple[int, int]:
        """(tile side rounded down to `size_multiple`, overlap or the default), checked."""
        m = self.size_multiple
        tile = int(tile_size) // m * m
        if tile < m:
            raise ValueError(f"tile_size={tile_size}: must be at least {m} (tiles are multiples of {m} px)")
        overlap = self.tile_overlap() if overlap is None else int(overlap)
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap={overlap}: must be in [0, tile_size) with tile_size {tile}")
        return tile, overlap

    @torch.no_grad()
    def sample(self, source: torch.Tensor | None = None, class_labels=None, num_images: int | None = None,
               seed=None, generator: rng.Generators = None, settings: dict | None = None,
               tiling: Tiling | None = None, label_map: torch.Tensor | None = None,
               instances: torch.Tensor | None = None, keep: tuple[torch.Tensor, torch.Tensor] | None = None,
               size: tuple[int, int] | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
               lowres: torch.Tensor | None = None, rows: torch.Tensor | None = None,
               progress: bool = True) -> torch.Tensor:
        """Images [N x 3 x H x W] in [-1, 1].

        - `source` [N x 3 x h x w] in [-1, 1]: the input of kinds that take one (SR3: the low-res image; the
          output is (h*scale) x (w*scale), sides multiples of `size_multiple`).
        - `seed`: an int (image i gets seed + i) or one seed per image, so an image does not depend on the batch
          it is drawn in; or `generator`: a torch.Generator for the whole batch, or one per image
          (cascade.diffusion.rng). Neither: torch's global RNG.
        - `settings`: overrides of `self.defaults` for this call (sampler, steps, guidance_scale, aug_level, ...).
        - `tiling` (kinds with spatial conditioning): denoise jointly in overlapping tiles.
        - `label_map` / `instances` [N x 1 x H x W] long (label-map kinds): the semantic map and the instance IDs,
          resized nearest to the output size (a base stage's output takes the map's size).
        - `keep` (image [N x 3 x H x W] in [-1, 1] at the output size, mask [N x 1 x H x W] bool): an edit: only
          the masked pixels are generated; every step's x0 estimate takes the image outside the mask, and the
          output is the image there exactly.
        - `size` (H, W) (kinds that generate at any size, e.g. the one-shot scene): the output size.
        - `init` [N x 3 x H x W] in [-1, 1] at the output size and `strength` in [0, 1]: SDEdit (Meng et al. 2022):
          sampling starts from `init` noised to the level `strength` of the way up the schedule, and runs the
          remaining steps (0: `init` unchanged; 1: a fresh sample).
        - `lowres` [N x 3 x h x w] in [-1, 1] (stages without an input): generative-prior SR, PULSE's idea with a
          diffusion prior: every x0 estimate is projected onto the images that downsample (cascade.diffusion.resize,
          antialiased bicubic) to `lowres` exactly, and so is the output (sides integer multiples of `lowres`'s).
        - `rows` [N or 1 x 3 x H x 1] in [-1, 1] (stages without an input): a row profile, the mean colour of each
          output row; every x0 estimate's rows are shifted so that, clamped to [-1, 1], its row means are `rows`,
          and so are the output's: a photo's horizons and bands stay at their heights, the rest is drawn anew.
        """
        s = self.settings(settings)
        if tiling is not None and not self.kind.spatial:
            raise ValueError(f"tiling applies to stages with spatial conditioning (an input image, a label map), not "
                             f"to a {self.kind.name} stage")
        device = torch.device("cpu") if tiling is not None else self.device  # where the full-size images live
        n = source.shape[0] if source is not None else None
        maps_n = label_map.shape[0] if label_map is not None else None
        labels = self.label_tensor(class_labels, num_images or n or maps_n)
        n = n or num_images or (len(labels) if class_labels is not None else None) or maps_n or 1
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} class labels for {n} images")
        generators = rng.per_image(seed, n) if seed is not None else generator
        inputs = self.kind.sampling_inputs(self, source, s, generators, device)
        for what, maps in (("label maps", label_map), ("instance maps", instances)):
            if maps is not None and maps.shape[0] not in (1, n):
                raise ValueError(f"{maps.shape[0]} {what} for {n} images")
        if self.kind.uses_label_maps:
            inputs = self.kind.with_label_maps(self, inputs, label_map, instances, device)
        elif label_map is not None or instances is not None:
            raise ValueError(f"a {self.kind.name} stage takes no label map")
        if size is not None:
            if self.kind.takes_input:
                raise ValueError(f"size= applies to stages without an input, not to a {self.kind.name} stage")
            inputs = self.kind.at_size(self, inputs, tuple(size), device)
        inputs = _broadcast(inputs, self.kind.spatial, n)  # one map or positional channel for every image
        if lowres is not None:
            inputs = consistent_with(inputs, lowres.to(device), n, self.kind)
        if rows is not None:
            inputs = with_rows(inputs, rows.to(device), n, self.kind)
        if keep is not None:
            inputs = keeping(inputs, keep[0].to(device), keep[1].to(device).bool(), n)
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength={strength}: must be in [0, 1]")
        if init is not None:
            if tuple(init.shape) != (n, 3, *inputs.size):
                raise ValueError(f"init {tuple(init.shape)} must be [{n} x 3 x {inputs.size[0]} x {inputs.size[1]}]")
            init = inputs.start(init.to(device, torch.float32))
        cond = dict(inputs.cond)
        if labels is not None:
            cond["class_labels"] = labels.to(device)
        config = self.unet.config
        denoiser = guided(self.unet, s.guidance_scale, self.unet.null_class if config.num_classes else None,
                          self.unet.null_label if config.num_labels else None)
        scheduler = make_sampler(s.sampler, self.noise_scheduler.config, final_timestep=s.final_timestep)
        bar = None
        if tiling is not None:
            denoiser, bar = self._tiled(denoiser, inputs.size, tiling, scheduler, s.steps, n, progress)
        if inputs.project is not None and self.kind.iterative:
            config = self.noise_scheduler.config
            denoiser = constrained(denoiser, inputs.project, self.noise_scheduler.alphas_cumprod, config.prediction_type)
        shape = (n, self.unet.config.in_channels, *inputs.size)
        try:
            images = self.kind.generate(denoiser, scheduler, shape, s.steps, generators, device,
                                        progress and tiling is None, init, float(strength), cond, resample=s.resample)
        finally:
            if bar is not None:
                bar.close()
        if inputs.project is not None:  # the last step's output is the last x0 estimate up to round-off: make it exact
            images = inputs.project(images)
        images = inputs.finish(images)
        if keep is not None:  # the kept pixels are the given image's, bit for bit
            images = torch.where(keep[1].to(images.device).bool(), images, keep[0].to(images.device, images.dtype))
        return images

    def _tiled(self, denoiser, size, tiling: Tiling, scheduler, steps: int, n: int, progress: bool):
        """The tiled denoiser over full-size host tensors, and its progress bar (tiles x steps)."""
        tile, overlap = self.tile_geometry(tiling.size, tiling.overlap)
        tiled = TiledDenoiser(denoiser, *size, tile, overlap, self.size_multiple, tiling.batch, self.device,
                              spatial=self.kind.spatial)
        scheduler.set_timesteps(steps)
        evaluations = len(scheduler.timesteps)  # steps, or more for second-order schedulers
        tiled.bar = tqdm(total=evaluations * n * len(tiled.tiles), unit="tile", leave=False,
                         desc=f"{len(tiled.tiles)} tiles x {evaluations} steps", disable=not progress)
        return tiled, tiled.bar

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the stage folder (module docstring) in one step: a crash never leaves half of it (cascade.io.atomic)."""
        self.checked(self.defaults)  # set by hand (`stage.defaults = ...`): never a folder that would not load again
        with replacing_folder(folder) as tmp:
            self.unet.save_pretrained(tmp / "unet")
            self.noise_scheduler.save_config(tmp / "scheduler")
            record = {"format": "cascade-stage", "version": 2, "kind": self.kind.to_dict(),
                      "class_names": self.class_names, "sample": asdict(self.defaults), "origin": self.origin}
            if self.checked_erf() is not None and self._erf_weights is not None:  # measured on these weights
                record["erf"] = {**self.erf, "weights": self._erf_weights}
            (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2))

    @classmethod
    def from_pretrained(cls, name: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool | None = None, token: str | bool | None = None,
                        subfolder: str | None = None) -> "Stage":
        """A stage folder, or a stage on the Hub by id (`org/name`, with `revision`, `cache_dir`,
        `local_files_only`, `token` as in diffusers; `subfolder` inside the repository)."""
        folder = local_folder(name, STAGE_FILE, revision, cache_dir, local_files_only, token, subfolder=subfolder)
        for needed in (STAGE_FILE, "unet/config.json", "scheduler/scheduler_config.json"):
            if not (folder / needed).is_file():
                raise CheckpointError(f"{folder}: not a cascade stage (missing {needed})")
        try:
            kind, defaults, class_names, origin, erf = _read_stage_file(folder / STAGE_FILE)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{folder / STAGE_FILE}: invalid stage settings ({e})") from None
        unet = _load_unet(folder / "unet")
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        if not unet.config.num_classes:
            class_names = []  # folders written before unconditional stages dropped their data's names
        try:
            stage = cls(unet.eval(), scheduler, kind, defaults, class_names, origin)
        except ValueError as e:
            raise CheckpointError(f"{folder}: {e}") from None
        if erf is not None:  # checked against the weights when it is used (checked_erf)
            stage.erf = {key: value for key, value in erf.items() if key != "weights"}
            stage._erf_weights = erf["weights"]
        return stage


def _broadcast(inputs: Conditioning, spatial: tuple[str, ...], n: int) -> Conditioning:
    """`inputs` whose spatial entries given once (a batch of 1: one label map, the scene's positional
    channel) serve every one of the `n` images."""
    cond = {key: value.expand(n, *value.shape[1:]) if key in spatial and value is not None and value.shape[0] == 1
            else value for key, value in inputs.cond.items()}
    return replace(inputs, cond=cond)


def _read_stage_file(path: Path) -> tuple[StageKind, SampleConfig, list[str], dict, dict | None]:
    record = json.loads(path.read_text())
    if record.get("version", 1) > STAGE_VERSION:
        raise ValueError(f"format version {record['version']}; this cascade reads up to {STAGE_VERSION}: upgrade cascade")
    erf = record.get("erf")
    radius = erf.get("radius") if isinstance(erf, dict) else None
    if erf is not None and not (type(radius) is int and radius >= 0 and isinstance(erf.get("weights"), str)):
        raise ValueError(f"erf: {str(erf)[:60]} is not a measurement (an integer radius >= 0 and a weights hash)")
    if "kind" not in record:  # version 1: one flat mapping of the old StageSettings
        kind = (SR3(scale=record["scale"], residual=record.get("residual", False),
                    residual_scale=record.get("residual_scale", 1.0)) if record.get("scale", 1) > 1 else Base())
        sample_keys = {f.name for f in fields(SampleConfig)}
        return kind, SampleConfig().replace({k: v for k, v in record.items() if k in sample_keys}), \
            list(record.get("class_names", [])), {}, None
    return (StageKind.from_dict(record["kind"]), SampleConfig().replace(record.get("sample", {})),
            list(record.get("class_names", [])), dict(record.get("origin") or {}), erf)


def _load_unet(folder: Path) -> UNet:
    try:
        kind = json.loads((folder / "config.json").read_text()).get("_class_name")
    except ValueError as e:
        raise CheckpointError(f"{folder / 'config.json'}: not valid JSON ({e})") from None
    if kind != UNet.__name__:
        raise CheckpointError(f"{folder / 'config.json'}: a {kind} model, not a cascade {UNet.__name__}")
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():  # never fall back to a pickled .bin
        raise CheckpointError(f"{weights}: missing (stage weights are read from safetensors only)")
    try:
        return UNet.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: cannot load weights ({' '.join(str(e).split())[:200]})") from None
