"""Sampling speed and exactness of a loaded stage: the weights' storage as diffusers leaves it
(safetensors' own buffers, not 64-byte aligned) against cascade's copy (cascade.models.weights).

    python eval/bench_loading.py                                   # the demo SR3 architecture, random weights
    python eval/bench_loading.py --pipeline runs/sr3_photos/pipeline --rounds 5

Three models of one architecture and the same weights: "fresh" (built here, as training leaves
it), "diffusers storage" (`ModelMixin.from_pretrained` without the copy) and "cascade" (`UNet.from_pretrained`).
Each round samples the same images with each (interleaved, so machine drift hits all three alike);
the table has the best img/s over rounds, the weights' alignments, and the largest difference of
the samples from the fresh model's.
"""

import argparse
import tempfile
import time

import torch
from diffusers import ModelMixin

from cascade.cli.common import run_cli
from cascade.config.loading import load_config
from cascade.config.sections import SampleConfig
from cascade.config.stages import SR3StageConfig
from cascade.diffusion.schedule import make_noise_scheduler
from cascade.inference.pipeline import Pipeline, Stage
from cascade.kinds.sr3 import SR3
from cascade.models.unet import UNet
from cascade.models.weights import ALIGNMENT


def demo_stage() -> Stage:
    """The demo SR3 stage's architecture (configs/sr3_photos.yaml) with random weights."""
    cfg = load_config(SR3StageConfig, "configs/sr3_photos.yaml")
    torch.manual_seed(0)
    unet = UNet(**vars(cfg.model)).eval()
    with torch.no_grad():  # zero-initialised output layers would make every sample the same
        for p in unet.parameters():
            p.normal_(0, 0.05)
    kind = SR3.from_config(cfg.sr)
    return Stage(unet, make_noise_scheduler(cfg.diffusion, clip_sample=kind.clip_sample), kind,
                 SampleConfig(sampler="ddim"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="a pipeline folder; its last stage is timed (default: demo_stage())")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    fresh = Pipeline.from_pretrained(args.pipeline).stages[-1] if args.pipeline else demo_stage()
    with tempfile.TemporaryDirectory() as folder:
        fresh.unet.save_pretrained(folder)
        plain = ModelMixin.from_pretrained.__func__(UNet, folder).eval()  # diffusers' loader alone
        ours = UNet.from_pretrained(folder).eval()
    stages = {"fresh": fresh, "diffusers storage": Stage(plain, fresh.noise_scheduler, fresh.kind, fresh.defaults),
              "cascade": Stage(ours, fresh.noise_scheduler, fresh.kind, fresh.defaults)}
    lowres = torch.rand(args.batch, 3, fresh.input_resolution, fresh.input_resolution,
                        generator=torch.Generator().manual_seed(0)) * 2 - 1

    def draw(stage):
        return stage.sample(lowres, settings=dict(steps=args.steps), seed=1, progress=False)

    reference = draw(fresh)
    best = dict.fromkeys(stages, 0.0)
    diff = {}
    for _ in range(args.rounds):
        for name, stage in stages.items():
            start = time.perf_counter()
            out = draw(stage)
            best[name] = max(best[name], args.batch / (time.perf_counter() - start))
            diff[name] = (out - reference).abs().max().item()
    print(f"{fresh.resolution} px, batch {args.batch}, {args.steps} steps ({fresh.defaults.sampler}), "
          f"{torch.get_num_threads()} threads, best of {args.rounds} rounds")
    print("| weights | data_ptr % 64 | sampling img/s | max abs diff from fresh |")
    print("|---|---|---|---|")
    for name, stage in stages.items():
        offsets = sorted({p.data_ptr() % ALIGNMENT for p in stage.unet.parameters()})
        print(f"| {name} | {', '.join(map(str, offsets))} | {best[name]:.2f} | {diff[name]:.1e} |")


if __name__ == "__main__":
    run_cli(main)
