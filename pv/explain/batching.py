"""How many model inputs to evaluate at once: sized from a probe of the model's activations and a memory budget.

LIME's perturbations and IG's interpolated images are evaluated many per model call. The batch is
    floor(budget / bytes one input needs), clamped to [1, MAX_BATCH[device]]
where the bytes one input needs come from a probe forward pass (forward hooks on every leaf module):
without gradients the peak is about 3 of the largest activations (a layer's input, its output and a
residual branch), with gradients every activation is kept for the backward pass, so it is their sum.
The budget is half the free GPU memory on CUDA, and on CPU the smaller of 1 GiB and a quarter of the
available RAM (/proc/meminfo). CPU batches stop at 64 and, further, where the largest activation of the
batch would pass CPU_LARGEST_BYTES (32 MiB, glibc's largest mmap threshold): a block above it is mapped
and zeroed afresh by the kernel on every call, and for ResNet-50 at 224 px those page faults cost more
than the larger batch saves (1 thread, AVX2 Zen 3: 187 ms/image at batch 64, 57 of them in the kernel,
against 143 ms at batch 10).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

MAX_BATCH = {"cpu": 64, "cuda": 256}
CPU_BUDGET_BYTES = 1 << 30
CPU_LARGEST_BYTES = 32 << 20


class ActivationProbe:
    """Context manager: records the largest and the total bytes of the outputs of `model`'s leaf modules."""

    def __init__(self, model: nn.Module):
        self.model, self.largest, self.total, self._handles = model, 0, 0, []

    def _hook(self, module: nn.Module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            size = output.numel() * output.element_size()
            self.largest, self.total = max(self.largest, size), self.total + size

    def __enter__(self) -> "ActivationProbe":
        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        self._handles = [m.register_forward_hook(self._hook) for m in leaves]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def bytes_per_input(self, inputs: int, with_gradients: bool) -> int:
        """Estimated working memory of one input, from a probe over `inputs` inputs."""
        need = self.total if with_gradients else 3 * self.largest
        return max(1, need // max(1, inputs))

    def largest_per_input(self, inputs: int) -> int:
        """Bytes of the largest activation of one input, from a probe over `inputs` inputs."""
        return max(1, self.largest // max(1, inputs))


def memory_budget(device: torch.device) -> int:
    """Bytes a batch may use on `device` (see the module docstring)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    budget = CPU_BUDGET_BYTES
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                budget = min(budget, int(line.split()[1]) * 1024 // 4)
    except (OSError, ValueError, IndexError):
        pass
    return budget


def batch_size_for(bytes_per_input: int, device: torch.device, extra_bytes_per_input: int = 0, largest_per_input: int = 0) -> int:
    """The batch that fits `memory_budget(device)`, at most MAX_BATCH for the device type and, on CPU,
    small enough that its largest activation (`largest_per_input` bytes per input) stays within CPU_LARGEST_BYTES."""
    per_input = bytes_per_input + extra_bytes_per_input
    batch = min(MAX_BATCH.get(device.type, 64), memory_budget(device) // max(1, per_input))
    if device.type == "cpu" and largest_per_input > 0:
        batch = min(batch, CPU_LARGEST_BYTES // largest_per_input)
    return int(max(1, batch))
