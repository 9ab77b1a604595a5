#!/usr/bin/python3
"""Golden values for tests/engine/optimizer_test.cpp, from PyTorch 1.13's optimizers.

Run with Debian's torch (python3-torch): /usr/bin/python3 tests/engine/optimizer_goldens.py
It prints C++ array literals to paste into the test: the initial 7-element parameter, the
5 gradients fed one per step, and the parameter after each of the 5 steps for every
configuration below. All tensors are float32; foreach=False (the single-tensor loops
ember's kernels follow).
"""
import torch

torch.manual_seed(1234)
initial = (torch.rand(7) * 2 - 1).float()
gradients = [(torch.randn(7) * 0.5).float() for _ in range(5)]
# Make one gradient element large and one tiny, to exercise Adam's normalization.
gradients[2][3] = 40.0
gradients[4][5] = 1e-7

configurations = {
    "sgd_plain": lambda p: torch.optim.SGD([p], lr=0.1, foreach=False),
    "sgd_momentum_dampening_wd": lambda p: torch.optim.SGD(
        [p], lr=0.05, momentum=0.9, dampening=0.25, weight_decay=0.01, foreach=False),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(
        [p], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02, foreach=False),
    "adam_wd": lambda p: torch.optim.Adam(
        [p], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, foreach=False),
    "adamw_default_wd": lambda p: torch.optim.AdamW([p], lr=0.01, foreach=False),
    "adamw_wd": lambda p: torch.optim.AdamW(
        [p], lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, foreach=False),
}


def float_literal(value):
    text = "%.9g" % value  # 9 significant digits round-trip any float32
    if "." not in text and "e" not in text:
        text += ".0"
    return text + "f"


def literal(values):
    return "{" + ", ".join(float_literal(v) for v in values.tolist()) + "}"


print("// Produced by tests/engine/optimizer_goldens.py with torch", torch.__version__)
print("constexpr float golden_initial[7] = %s;" % literal(initial))
print("constexpr float golden_gradients[5][7] = {")
for g in gradients:
    print("    %s," % literal(g))
print("};")
for name, make in configurations.items():
    parameter = torch.nn.Parameter(initial.clone())
    optimizer = make(parameter)
    print("constexpr float golden_%s[5][7] = {" % name)
    for g in gradients:
        parameter.grad = g.clone()
        optimizer.step()
        print("    %s," % literal(parameter.detach()))
    print("};")
