"""Is the data pipeline the bottleneck of training?

Prints steps/s of training through the real pipeline (patches read from OME-Zarr, foreground
bias, augmentation, normalisation, the DataLoader) and steps/s of the same steps on in-memory
random tensors of the same shape, measured in one run, and their ratio (target >= 0.9).

    python bench/train.py                                   # demo-sized model on the CPU
    python bench/train.py --channels 48 --multipliers 1 2 4 8 --blocks 2 --patch 128 --batch 32 --workers 8
"""

from __future__ import annotations

import argparse
import time

import torch

from flowrestore.methods import get_method
from flowrestore.models.nets import NetConfig, UNet, count_parameters
from flowrestore.data.patches import PatchBatches
from flowrestore.training.loop import _step_generator, make_step, resolve_device

from common import simulated_acquisitions, threads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--multipliers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    torch.set_num_threads(threads())
    device = resolve_device(args.device)
    method = get_method("guided_cfm")
    net = UNet(NetConfig(channels=args.channels, multipliers=args.multipliers, blocks=args.blocks,
                         in_channels=2, norm=method.net_norm)).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = make_step(method, net, net, optimizer, scheduler, 1.0, args.amp and device.type == "cuda")
    data = simulated_acquisitions(args.images, (args.size, args.size))
    batches = PatchBatches(data, (args.patch, args.patch), args.batch)
    total = args.warmup + args.steps

    def run(source) -> float:
        t0 = None
        for i, (y, x1) in enumerate(source):
            if i == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            y, x1 = y.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            step(y, x1, _step_generator(0, i, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps / (time.perf_counter() - t0)

    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(total), num_workers=args.workers,
                                         pin_memory=device.type == "cuda",
                                         prefetch_factor=4 if args.workers else None)
    shape = (args.batch, 1, args.patch, args.patch)
    memory = [(torch.randn(shape), torch.randn(shape)) for _ in range(4)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Alternate the two measurements twice so drifting machine load hits both alike.
    rates = {"pipeline": [], "memory": []}
    for _ in range(2):
        rates["memory"].append(run(memory[i % 4] for i in range(total)))
        rates["pipeline"].append(run(loader))
    pipe, mem = max(rates["pipeline"]), max(rates["memory"])
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{threads()} threads'}), "
          f"{count_parameters(net) / 1e6:.2f}M parameters, patches {args.patch}^2, batch {args.batch}, "
          f"workers {args.workers}")
    print(f"steps/s through the data pipeline: {pipe:.2f}")
    print(f"steps/s on in-memory tensors:      {mem:.2f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"ratio pipeline / in-memory: {pipe / mem:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
