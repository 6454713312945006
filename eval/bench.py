"""The benchmark: sampling steps vs quality, network throughput against diffusers, sampling memory.

    python eval/bench.py                                  # everything; writes bench.md and bench.json
    python eval/bench.py --only throughput memory         # the network sections only (~30 minutes here)
    python eval/bench.py --only sr --num 64               # a quicker, noisier quality table

Models: the demo presets (configs/sr3_photos.yaml, configs/base_photos.yaml) trained on the built-in
photos, ~6 minutes each on 2 CPU cores. They are trained into `--runs` (default runs/bench) by
`train/*.py` the first time and reused afterwards (`--sr` / `--base` take other stage folders).

1. sr: the SR3 stage on `--num` held-out 64 px crops (the eval/sr.py protocol: uint8 low-res input,
   PSNR/SSIM on Y with the border cropped, consistency, FID of the outputs against the truths), for
   DDPM ancestral sampling at 1000 steps (the reference, run with two seeds: their difference is
   the noise floor of every column) and each sampler at 5, 10, 20 and 50 steps. NFE = network
   evaluations per image; Δ columns are against the reference's first seed.
2. base: the base stage's FID against `--base-num` real crops of the training photos (docs/evaluation.md's
   eval/fid.py row) and CAS (eval/cas.py's classifier and schedule trained on the samples, top-1 on
   500 real held-out crops) vs steps, from `--base-num` class-balanced samples per row: guided
   DDPM at 1000 steps (the reference), then each of `--base-samplers` at `--steps`; the last row
   is repeated with other seeds as the noise floor.
3. throughput: forward and training-step images/s of our UNet and diffusers' UNet2DModel built to
   the same widths, depth and attention levels (parameter counts printed; equal within 5%), and of
   our UNet with layout="efficient" (same widths and depth, within 5% of the parameters), at 32,
   64 and 128 px and at each of `--widths` (base channels: 32, the demo presets' networks, and
   128, configs/base_cifar10.yaml's; the batch shrinks as the width grows, so that every width
   holds the same activation memory per step), in fp32 and with our performance settings
   (channels-last, bf16 autocast where the device supports it); achieved GFLOP/s
   (torch.utils.flop_counter) against the float32 matmul rate measured in the same rounds (each
   round measures it first; a row's ceiling is the fastest of its rounds). The models take turns
   over 3 rounds; medians are reported, with each step's time by operator kind.
   The training step is the training scripts' (fused AdamW, MSE).
   `--compile` adds torch.compile rows for the models (static shapes, Dynamo's caches emptied per
   size), with the compile time (Inductor's on-disk cache shortens it on later runs).
4. memory: peak tensor memory of sampling each stage at batch 1 and 16 (cascade.profiling).
"""

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from tqdm.auto import tqdm

from cascade.classifier import ResNetClassifier, predict_logits, top_k_accuracy, train_classifier
from cascade.cli import run_cli
from cascade.config import TrainConfig
from cascade.images import to_unit, uint8_to_signed, uint8_to_unit, unit_to_uint8
from cascade.metrics import sr as metrics
from cascade.metrics.scores import FeatureStats, fid_from_stats
from cascade.metrics.inception import load_feature_network
from cascade.metrics.sources import collect, parse_source, labelled_set, load_real, pipeline_batches, real_batches
from cascade.pipeline import Pipeline
from cascade.profiling import OP_KINDS, count_flops, matmul_gflops, peak_memory, time_by_kind, timed
from cascade.resize import downsample
from cascade.sampling import make_sampler
from cascade.training import make_optimizer
from cascade.unet import UNet

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["ddim", "dpm++", "dpm++sde", "unipc", "euler", "heun"]
STEPS = [5, 10, 20, 50]
REFERENCE = "ddpm"  # ancestral sampling at --reference-steps (1000: the training schedule's every step)


# ---------------------------------------------------------------- models


def trained_stage(kind: str, args) -> str:
    """The stage folder to benchmark: --sr/--base, else the preset trained into --runs (once)."""
    given = getattr(args, kind)
    if given:
        return given
    folder = Path(args.runs) / f"{kind}_photos"
    if not (folder / "pipeline" / "cascade.json").is_file():
        script = {"sr": "train/sr3.py", "base": "train/base.py"}[kind]
        config = {"sr": "configs/sr3_photos.yaml", "base": "configs/base_photos.yaml"}[kind]
        print(f"training {config} into {folder} (once; reused by later runs)", flush=True)
        subprocess.run([sys.executable, str(ROOT / script), "--config", str(ROOT / config),
                        f"train.output_dir={folder}"], check=True)
    return str(folder / "pipeline")


# ---------------------------------------------------------------- 1. SR quality vs steps


def sr_quality(args, device) -> list[dict]:
    pipe = Pipeline.from_pretrained(trained_stage("sr", args), device=device)
    stage = pipe.upsamplers[-1]
    scale, network = stage.kind.scale, load_feature_network(args.weights, device)
    crops = list(real_batches(load_real(parse_source("photos")), args.num, args.batch_size, stage.resolution, True,
                              (0.15, 0.4), args.seed))
    truth = FeatureStats()
    for hr, _ in crops:
        truth.update(network(hr.to(device))[0])

    def run(sampler: str, steps: int, seed: int) -> dict:
        collected, stats, seconds = {}, FeatureStats(), 0.0
        done = 0
        for hr, _ in tqdm(crops, desc=f"SR {sampler} {steps}", unit="batch", leave=False):
            lr = unit_to_uint8(downsample(uint8_to_unit(hr), scale))
            start = time.perf_counter()
            sr = stage.sample(uint8_to_signed(lr).to(device), settings=dict(sampler=sampler, steps=steps),
                              seed=seed + done, progress=False)
            done += len(hr)
            seconds += time.perf_counter() - start
            out = unit_to_uint8(to_unit(sr).cpu())
            for key, value in metrics.per_image(out, lr, hr, scale).items():
                collected.setdefault(key, []).append(value)
            stats.update(network(out.to(device))[0])
        row = metrics.summarise(collected)
        nfe = len(_timesteps(stage, sampler, steps))
        return {"sampler": sampler, "steps": steps, "seed": seed, "nfe": nfe, "fid": fid_from_stats(stats, truth),
                "seconds_per_image": seconds / args.num, **row}

    rows = [run(REFERENCE, args.reference_steps, args.seed), run(REFERENCE, args.reference_steps, args.seed + 10_000)]
    print(f"  reference done: PSNR Y {rows[0]['psnr_y']:.2f}, FID {rows[0]['fid']:.2f}", flush=True)
    for sampler in args.samplers:
        for steps in args.steps:
            rows.append(run(sampler, steps, args.seed))
            r = rows[-1]
            print(f"  {sampler} {steps}: PSNR Y {r['psnr_y']:.2f} SSIM Y {r['ssim_y']:.4f} FID {r['fid']:.2f}", flush=True)
    return rows


def _timesteps(stage, sampler: str, steps: int):
    scheduler = make_sampler(sampler, stage.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def sr_table(rows: list[dict]) -> str:
    ref = rows[0]
    lines = ["| sampler | steps | NFE | PSNR Y | Δ dB | SSIM Y | Δ SSIM | consistency | FID | Δ FID | s/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["sampler"] + (" (2nd seed)" if r is rows[1] else "")
        lines.append(f"| {name} | {r['steps']} | {r['nfe']} | {r['psnr_y']:.2f} | {r['psnr_y'] - ref['psnr_y']:+.2f} | "
                     f"{r['ssim_y']:.4f} | {r['ssim_y'] - ref['ssim_y']:+.4f} | {r['consistency']:.2e} | "
                     f"{r['fid']:.2f} | {100 * (r['fid'] / ref['fid'] - 1):+.1f}% | {r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- 2. base FID and CAS vs steps


def base_quality(args, device) -> list[dict]:
    pipe = Pipeline.from_pretrained(trained_stage("base", args), device=device)
    stage, network = pipe.base, load_feature_network(args.weights, device)
    k, size, per_class = stage.unet.config.num_classes, stage.resolution, max(1, args.base_num // 10)
    photos = load_real(parse_source("photos", "train"))
    real = FeatureStats()  # the reference of eval/fid.py's row in docs/evaluation.md: crops of the training photos
    for images, _ in real_batches(photos, args.base_num, 100, size, True, (0.15, 0.4), args.seed):
        real.update(network(images.to(device))[0])
    test_x, test_y = labelled_set(parse_source("photos", "test"), 50, k, size, (0.15, 0.4), args.seed + 1)

    def run(sampler: str, steps: int, seed: int) -> dict:
        start = time.perf_counter()
        batches = pipeline_batches(pipe.with_settings({0: dict(sampler=sampler)}), per_class * k, args.batch_size,
                                   seed, steps=steps, progress=True)
        gen_x, gen_y = collect(batches)
        seconds = (time.perf_counter() - start) / len(gen_x)
        stats = FeatureStats()
        for i in range(0, len(gen_x), 100):
            stats.update(network(gen_x[i:i + 100].to(device))[0])
        torch.manual_seed(args.seed)  # the classifier's initial weights, as eval/cas.py
        classifier = ResNetClassifier(k, width=32, resolution=size).to(device)
        train_classifier(classifier, gen_x, gen_y, epochs=30, batch_size=64, seed=args.seed, desc="CAS classifier")
        cas = top_k_accuracy(predict_logits(classifier, test_x), test_y, 1)
        nfe = len(_timesteps(stage, sampler, steps)) * (2 if stage.defaults.guidance_scale != 1 else 1)
        row = {"sampler": sampler, "steps": steps, "seed": seed, "nfe": nfe, "images": len(gen_x),
               "fid": fid_from_stats(stats, real), "cas_top1": cas, "seconds_per_image": seconds}
        print(f"  base {sampler} {steps} (seed {seed}): FID {row['fid']:.2f} CAS {100 * cas:.1f}%", flush=True)
        return row

    rows = [run(REFERENCE, args.reference_steps, args.seed)]
    for sampler in args.base_samplers:
        rows += [run(sampler, steps, args.seed) for steps in args.steps]
    # The noise floor: the last row again with other seeds (a second 1000-step reference costs as
    # much as the whole sweep; any seed-to-seed difference at this N is noise).
    rows.append({**run(rows[-1]["sampler"], rows[-1]["steps"], args.seed + 10_000), "noise_floor": True})
    return rows


def base_table(rows: list[dict]) -> str:
    ref = rows[0]
    lines = [f"{ref['images']} samples per row (guided: 2 network evaluations per step)", "",
             "| sampler | steps | NFE | FID | Δ FID | CAS top-1 | Δ CAS | s/img |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']}{' (2nd seed)' if r.get('noise_floor') else ''} | {r['steps']} | {r['nfe']} | "
              f"{r['fid']:.2f} | {100 * (r['fid'] / ref['fid'] - 1):+.1f}% | {100 * r['cas_top1']:.1f}% | "
              f"{100 * (r['cas_top1'] - ref['cas_top1']):+.1f} | {r['seconds_per_image']:.3f} |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- 3. throughput


ARCH = dict(channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_size=16, head_channels=32)
WIDTHS = [32, 128]  # base channels: the demo presets' (2.4 M parameters) and configs/base_cifar10.yaml's (38 M)
BATCH = {32: 32, 64: 16, 128: 4}  # at width 32; batch x width stays constant (batch_size below)
ROUNDS = 3  # timing rounds per setting; the median is reported


MODELS = ("diffusers", "ours", "ours efficient")  # the last: our UNet's layout="efficient" (cascade/unet.py)


def build(kind: str, size: int, width: int = WIDTHS[0]) -> torch.nn.Module:
    """Our UNet (either layout) or UNet2DModel with the same widths, depth, attention level and head size."""
    widths = [width * m for m in ARCH["channel_mult"]]
    attention = [size // 2 ** i == ARCH["attention_size"] for i in range(len(widths))]
    if kind.startswith("ours"):
        return UNet(sample_size=size, base_channels=width, channel_mult=ARCH["channel_mult"],
                    num_res_blocks=ARCH["num_res_blocks"], attention_resolutions=(ARCH["attention_size"],),
                    head_channels=ARCH["head_channels"], dropout=0.0,
                    layout="efficient" if kind == "ours efficient" else "standard")
    return UNet2DModel(sample_size=size, block_out_channels=widths, layers_per_block=ARCH["num_res_blocks"],
                       down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
                       up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
                       attention_head_dim=ARCH["head_channels"], norm_num_groups=32,
                       resnet_time_scale_shift="scale_shift", dropout=0.0)


def batch_size(size: int, width: int) -> int:
    """BATCH[size] at width 32, fewer images for wider networks: the same activation memory per step
    (wider networks at the width-32 batch spill this CPU's 2 MiB L2 caches: at width 128, 64 px,
    batch 16 trains at ~55% of the matmul rate, batch 4 at ~75%)."""
    return max(1, BATCH[size] * 32 // width)


def throughput(args, device) -> dict:
    rates = [matmul_gflops(device)]  # measured again in every round: a row's ceiling is the fastest of its rounds
    bf16 = device.type == "cuda" or _cpu_has_bf16()
    print(f"  float32 matmul: {rates[0]:.0f} GFLOP/s; bf16 autocast: {'yes' if bf16 else 'no (no bf16 instructions)'}",
          flush=True)
    rows = []
    # (name, channels-last, bf16 autocast, compiled, models): the efficient layout only in its own
    # best setting, the two same-layout models in every one
    same = MODELS[:2]
    settings = [("fp32 NCHW", False, False, False, same), ("fp32 channels-last", True, False, False, MODELS)]
    settings += [("bf16 channels-last", True, True, False, same)] if bf16 else []
    settings += [("fp32 channels-last compiled", True, False, True, MODELS)] if args.compile else []
    for width, size in [(w, s) for w in args.widths for s in args.sizes]:
        models = {kind: build(kind, size, width).to(device) for kind in MODELS}
        for name, channels_last, autocast, compiled, kinds in settings:
            if compiled:  # the sizes share forward code objects: start each size's compiled models from empty caches
                torch._dynamo.reset()
            cases = {kind: Case(models[kind], size, batch_size(size, width), device, channels_last, autocast, compiled)
                     for kind in kinds}
            times = {kind: ([], []) for kind in cases}
            failed = {kind: case.error for kind, case in cases.items() if case.error}
            for kind, error in failed.items():
                rows.append({"model": kind, "width": width, "size": size, "setting": name, "error": error})
                print(f"  {kind} width {width} {size}px {name}: FAILED {error}", flush=True)
            cases = {kind: case for kind, case in cases.items() if kind not in failed}
            ceilings = []  # the matmul rate in the same rounds: this machine's speed drifts by tens of percent
            for _ in range(ROUNDS):  # the models take turns, so a slow spell of the machine hits all
                ceilings.append(matmul_gflops(device))
                for kind, case in cases.items():
                    times[kind][0].append(timed(case.forward, device, warmup=1, min_seconds=0.5))
                    times[kind][1].append(timed(case.train_step, device, warmup=1, repeats=2, min_seconds=1.0))
            ceiling = max(ceilings)
            for kind, case in cases.items():
                row = case.result(statistics.median(times[kind][0]), statistics.median(times[kind][1]))
                rows.append({"model": kind, "width": width, "size": size, "setting": name,
                             "params": sum(p.numel() for p in models[kind].parameters()), **row,
                             "matmul_gflops": ceiling, "forward_pct": 100 * row["forward_gflops"] / ceiling,
                             "train_pct": 100 * row["train_gflops"] / ceiling})
                print(f"  {kind} width {width} {size}px {name}: forward {row['forward_img_s']:.1f} img/s "
                      f"({row['forward_gflops']:.0f} GFLOP/s), train {row['train_img_s']:.1f} img/s "
                      f"({row['train_gflops']:.0f} GFLOP/s); matmul {ceiling:.0f} GFLOP/s", flush=True)
            rates += ceilings
    return {"matmul_gflops_measured": rates, "rounds": ROUNDS, "rows": rows}


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


class Case:
    """One model in one setting (memory format, autocast, compiled): its inputs, the training
    scripts' optimizer, and the two calls that are timed: a forward pass and a training step."""

    def __init__(self, model, size: int, batch: int, device, channels_last: bool, autocast: bool, compiled: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model, self.batch, self.device, self.autocast = model.to(memory_format=fmt), batch, device, autocast
        if isinstance(model, UNet):
            model.memory_format = fmt  # our UNet converts its activations to this format itself
        self.x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
        self.t = torch.randint(0, 1000, (batch,), device=device)
        self.target = torch.randn_like(self.x)
        self.optimizer = make_optimizer(model.parameters(), TrainConfig(lr=1e-4))
        # FLOPs are counted on the eager model (a compiled one runs the same operations).
        self.forward_flops = count_flops(lambda: self._forward(model))
        self.train_flops = count_flops(lambda: self._train_step(model))
        self.net, self.compile_s, self.error = model, 0.0, None
        if compiled:  # the first calls compile (forward, then forward + backward); their time is reported apart
            self.net = torch.compile(model, dynamic=False)  # static shapes: the bench's shapes never change
            start = time.perf_counter()
            try:
                self.forward()
                self.train_step()
            except Exception as e:  # a compiler bug must not cost the rest of the table
                self.error = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
            self.compile_s = time.perf_counter() - start

    def _predict(self, net):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = net(self.x, self.t)
        return out.sample if hasattr(out, "sample") else out

    def _forward(self, net):
        self.model.eval()
        with torch.no_grad():
            self._predict(net)

    def _train_step(self, net):
        self.model.train()
        F.mse_loss(self._predict(net).float(), self.target).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def forward(self):
        self._forward(self.net)

    def train_step(self):
        self._train_step(self.net)

    def result(self, forward_s: float, train_s: float) -> dict:
        shares = time_by_kind(self.train_step, self.device)
        self.model.to(memory_format=torch.contiguous_format)
        return {"batch": self.batch, "compile_s": self.compile_s, "forward_img_s": self.batch / forward_s,
                "train_img_s": self.batch / train_s, "forward_gflops": self.forward_flops / forward_s / 1e9,
                "train_gflops": self.train_flops / train_s / 1e9, "train_time_by_kind": shares}


def throughput_table(result: dict) -> str:
    failed, rows = [r for r in result["rows"] if "error" in r], [r for r in result["rows"] if "error" not in r]
    measured = result["matmul_gflops_measured"]
    lines = [f"Each img/s is the median of {result['rounds']} rounds in which the models take turns; every round "
             f"first measures the float32 matmul rate, and a row's % matmul is against the fastest of its own "
             f"rounds (the matmul column: this machine's speed drifts; {min(measured):.0f}–{max(measured):.0f} "
             f"GFLOP/s in this run).", "",
             "| width | size | model | params | setting | batch | forward img/s | forward GFLOP/s (% matmul) | "
             "train img/s | train GFLOP/s (% matmul) | matmul GFLOP/s | train vs diffusers NCHW |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next(q for q in rows if (q["width"], q["size"], q["model"], q["setting"])
                   == (r["width"], r["size"], "diffusers", "fp32 NCHW"))
        lines.append(f"| {r['width']} | {r['size']} | {r['model']} | {r['params'] / 1e6:.2f} M | {r['setting']} | {r['batch']} | "
                     f"{r['forward_img_s']:.1f} | {r['forward_gflops']:.0f} ({r['forward_pct']:.0f}%) | "
                     f"{r['train_img_s']:.1f} | {r['train_gflops']:.0f} ({r['train_pct']:.0f}%) | "
                     f"{r['matmul_gflops']:.0f} | {r['train_img_s'] / ref['train_img_s']:.2f}x |")
    lines += [f"| {r['width']} | {r['size']} | {r['model']} | | {r['setting']} | failed: {r['error']} | | | | | | |"
              for r in failed]
    compiled = [r for r in rows if r["compile_s"]]
    lines += ["\nCompile time: " + ", ".join(f"{r['model']} width {r['width']} {r['size']} px {r['compile_s']:.0f} s"
                                          for r in compiled)
              ] if compiled else []
    lines += ["", "Ours is used channels-last (cascade.unet.UNet.memory_format); UNet2DModel as diffusers ships it "
              "is the NCHW row.", "", "Where a training step's time goes (torch.profiler, share of operator time):", "",
              "| width | size | model | setting | " + " | ".join(OP_KINDS) + " | elementwise and other |",
              "|---|---|---|---|" + "---|" * (len(OP_KINDS) + 1)]
    lines += [f"| {r['width']} | {r['size']} | {r['model']} | {r['setting']} | "
              + " | ".join(f"{100 * v:.0f}%" for v in r["train_time_by_kind"].values()) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- 4. memory


def memory(args, device) -> list[dict]:
    rows = []
    for kind in ("base", "sr"):
        stage = Pipeline.from_pretrained(trained_stage(kind, args), device=device).stages[-1]
        for batch in (1, 16):
            run = functools.partial(_sample_once, stage, batch, device)
            run()  # warm-up: lazily built kernels and caches are not sampling memory
            rows.append({"stage": kind, "resolution": stage.resolution, "batch": batch,
                         "peak_mib": peak_memory(run, device) / 2 ** 20,
                         "weights_mib": sum(p.numel() * p.element_size() for p in stage.unet.parameters()) / 2 ** 20})
    return rows


def _sample_once(stage, batch: int, device) -> None:
    if stage.kind.takes_input:
        g = torch.Generator().manual_seed(0)
        lowres = torch.rand(batch, 3, stage.input_resolution, stage.input_resolution, generator=g) * 2 - 1
        stage.sample(lowres.to(device), settings=dict(steps=2), seed=0, progress=False)
    else:
        stage.sample(class_labels=[0] * batch, settings=dict(steps=2), seed=0, progress=False)


def memory_table(rows: list[dict]) -> str:
    lines = ["| stage | px | batch | sampling peak MiB (beyond weights) | weights MiB |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['resolution']} | {r['batch']} | {r['peak_mib']:.1f} | {r['weights_mib']:.1f} |"
              for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["sr", "base", "throughput", "memory"],
                        default=["sr", "base", "throughput", "memory"])
    parser.add_argument("--runs", default="runs/bench", help="where the benchmark's models are trained and kept")
    parser.add_argument("--sr", help="SR stage or pipeline folder (default: train configs/sr3_photos.yaml once)")
    parser.add_argument("--base", help="base stage or pipeline folder (default: train configs/base_photos.yaml once)")
    parser.add_argument("--num", type=int, default=256, help="held-out crops for the SR table")
    parser.add_argument("--base-num", type=int, default=200, help="base samples per FID/CAS row")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--base-samplers", nargs="+", default=["dpm++", "dpm++sde"],
                        help="the base stage's steps sweep uses these samplers")
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--reference-steps", type=int, default=1000, help="DDPM steps of the reference rows")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS,
                        help="throughput: base channels of the measured networks (widths x1, x2, x2, x2)")
    parser.add_argument("--compile", action="store_true", help="throughput: add torch.compile rows (compile time shown)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    if bad := [w for w in args.widths if w < 32 or w % 32]:
        parser.error(f"--widths {bad[0]}: widths must be multiples of 32 (GroupNorm with 32 groups)")
    device = torch.device(args.device)

    report = {"device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    sections = [f"Device: {report['device']}, {report['threads']} threads, torch {report['torch']}"]
    jobs = [("sr", "SR3 stage: steps vs quality", sr_quality, sr_table),
            ("base", "Base stage: steps vs FID and CAS", base_quality, base_table),
            ("throughput", "Network throughput", throughput, throughput_table),
            ("memory", "Sampling memory", memory, memory_table)]
    for key, title, run, table in jobs:
        if key not in args.only:
            continue
        print(f"{title} ...", flush=True)
        start = time.perf_counter()
        report[key] = run(args, device)
        sections.append(f"## {title}\n\n{table(report[key])}\n\n({time.perf_counter() - start:.0f} s)")
        print(sections[-1], flush=True)
        Path(args.out + ".json").write_text(json.dumps(report, indent=2))
        Path(args.out + ".md").write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}.md and {args.out}.json")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model} (CPU)"


if __name__ == "__main__":
    run_cli(main)
