"""Network throughput: our UNet (both layouts) against diffusers' UNet2DModel, forward and training step.

    python eval/bench_throughput.py --out bench/throughput              # 28 min here
    python eval/bench_throughput.py --widths 32 --out bench/throughput32  # the demo width only (10 min)
    python eval/bench_throughput.py --compile                           # adds torch.compile rows

Forward and training-step images/s of our UNet and diffusers' UNet2DModel built to
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
Writes OUT.md and OUT.json.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from cascade.bench.profiling import OP_KINDS, count_flops, matmul_gflops, time_by_kind, timed
from cascade.bench.reports import add_run_arguments, write_report
from cascade.cli.common import run_cli
from cascade.config.sections import TrainConfig
from cascade.models.unet import UNet
from cascade.training.loop import make_optimizer

ARCH = dict(channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_size=16, head_channels=32)
WIDTHS = [32, 128]  # base channels: the demo presets' (2.4 M parameters) and configs/base_cifar10.yaml's (38 M)
BATCH = {32: 32, 64: 16, 128: 4}  # at width 32; batch x width stays constant (batch_size below)
ROUNDS = 3  # timing rounds per setting; the median is reported


MODELS = ("diffusers", "ours", "ours efficient")  # the last: our UNet's layout="efficient" (cascade/models/unet.py)


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


def table(result: dict) -> str:
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
    lines += ["", "Ours is used channels-last (cascade.models.unet.UNet.memory_format); UNet2DModel as diffusers ships it "
              "is the NCHW row.", "", "Where a training step's time goes (torch.profiler, share of operator time):", "",
              "| width | size | model | setting | " + " | ".join(OP_KINDS) + " | elementwise and other |",
              "|---|---|---|---|" + "---|" * (len(OP_KINDS) + 1)]
    lines += [f"| {r['width']} | {r['size']} | {r['model']} | {r['setting']} | "
              + " | ".join(f"{100 * v:.0f}%" for v in r["train_time_by_kind"].values()) + " |" for r in rows]
    return "\n".join(lines)



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS,
                        help="base channels of the measured networks (widths x1, x2, x2, x2)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (compile time shown)")
    add_run_arguments(parser, "bench/throughput")
    args = parser.parse_args(argv)
    if bad := [w for w in args.widths if w < 32 or w % 32]:
        parser.error(f"--widths {bad[0]}: widths must be multiples of 32 (GroupNorm with 32 groups)")
    device, start = torch.device(args.device), time.perf_counter()
    result = throughput(args, device)
    write_report(args.out, "Network throughput", table(result), result, device, time.perf_counter() - start,
                 {"sizes": args.sizes, "widths": args.widths, "compile": args.compile})


if __name__ == "__main__":
    run_cli(main)
