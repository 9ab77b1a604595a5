#!/usr/bin/python3
"""Golden learning rates for tests/engine/schedule_test.cpp, from PyTorch 1.13's schedulers.

Run with Debian's torch (python3-torch): /usr/bin/python3 tests/engine/schedule_goldens.py
It prints C++ array literals: element s is the rate of optimizer step s, i.e.
scheduler.get_last_lr()[0] after s calls of scheduler.step() (one per optimizer step).
"""
import torch


def rates(make_scheduler, base_lr, count):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    values = []
    for _ in range(count):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


def emit(name, values):
    print("constexpr double golden_%s[%d] = {%s};" % (name, len(values), ", ".join(repr(v) for v in values)))


print("// Produced by tests/engine/schedule_goldens.py with torch", torch.__version__)
emit("step_lr", rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 0.1, 10))
# Recursive form, stepped past T_max: PyTorch follows the cosine back up.
emit("cosine", rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 0.1, 16))
# Warmup over 4 steps: LinearLR(start_factor=1/4, total_iters=3).
emit("warmup", rates(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0,
                                                                total_iters=3), 0.1, 7))
emit("warmup_step", rates(lambda o: torch.optim.lr_scheduler.ChainedScheduler([
    torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=3),
    torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)]), 0.1, 10))
# OneCycleLR rates only (cycle_momentum=False: ember schedules the rate alone). The first
# phase ends at pct_start * total_steps - 1 = 2 here; the second case's, 0.75, falls
# between steps.
emit("one_cycle", rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10,
                                                                     cycle_momentum=False), 0.1, 10))
emit("one_cycle_fractional", rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(
    o, max_lr=0.02, total_steps=7, pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
    cycle_momentum=False), 0.02, 7))
