"""Where a GPU training step spends its time: the kernels of one backbone training step
(PosMLP-T or timm's Swin-T, features at 896x1344, AMP) by CUDA time, from torch.profiler.

    python benchmarks/gpu_profile.py --models posmlp_t swin_t --batch 8 --dtype bfloat16

Prints, per model: the step's wall time (CUDA events), the total CUDA kernel time, the number
of kernel launches, and the operators that take the most CUDA time (self time, with their
input shapes), so that what to speed up is measured rather than guessed. Same models, step
and optimizer as benchmarks/gpu_backbones.py.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.gpu_backbones import DTYPES, Timer, build, make_optimizer, train_step  # noqa: E402


def profile(name: str, batch: int, dtype: torch.dtype, size, top: int, device: str) -> None:
    device = torch.device(device)
    torch.manual_seed(0)
    model = build(name, size, device).train()
    opt, _ = make_optimizer(model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, *size, device=device)

    step = train_step(model, opt, scaler, x, dtype)
    for _ in range(3):
        step()
    timer = Timer(device)
    with timer:
        for _ in range(5):
            step()
    print(f'\n## {name}, batch {batch}, {dtype}: {timer.seconds / 5 * 1000:.1f} ms per step '
          f'({batch * 5 / timer.seconds:.1f} img/s)', flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA],
                                record_shapes=True) as prof:
        step()
        timer.sync()
    events = prof.key_averages(group_by_input_shape=True)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time for e in kernels) / 1000
    print(f'one profiled step: {len(kernels)} kernels, {total:.1f} ms of kernel time')
    print(events.table(sort_by='self_device_time_total', row_limit=top, max_name_column_width=40,
                       max_shapes_column_width=70))
    by_op = prof.key_averages()
    print(by_op.table(sort_by='self_device_time_total', row_limit=top, max_name_column_width=50))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=['posmlp_t', 'swin_t'])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bfloat16')
    parser.add_argument('--size', type=int, nargs=2, default=(896, 1344))
    parser.add_argument('--top', type=int, default=25)
    parser.add_argument('--device', default='cuda', help="'cpu' only to test this script")
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('gpu_profile: needs a CUDA device')
    for name in args.models:
        profile(name, args.batch, DTYPES[args.dtype], tuple(args.size), args.top, args.device)


if __name__ == '__main__':
    main()
