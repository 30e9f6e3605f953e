"""What restoring one image costs, per component: seconds, parameters and FLOPs.

Timing: warm-up runs first, then the median of ``repeats`` runs; CUDA events on a GPU (after a
synchronize), ``time.perf_counter`` on a CPU. FLOPs: torch's FlopCounterMode on a batch of one (matmuls and
convolutions; element-wise work is not counted). The device's name goes with every timing.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from restorevar.models import RestoreVAR

COMPONENTS = ("encode", "transformer", "refiner", "decode")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()}, {torch.get_num_threads()} threads)"


def _count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def component_params(model: RestoreVAR) -> dict[str, int]:
    v = model.vqvae
    encode = [v.encoder] + ([v.quant_conv, v.quantizer] if model.cfg.transformer.conditioning == "discrete" else [])
    return {"encode": _count(*encode), "transformer": _count(model.transformer), "refiner": _count(model.refiner),
            "decode": _count(v.post_quant_conv, v.decoder)}


def _timer(device: torch.device, fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _stages(model: RestoreVAR, x_B3HW: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Each component on the inputs it really receives, computed once up front."""
    with torch.no_grad():
        cond = model.condition(x_B3HW)
        gen = model.transformer.generate(cond, model.vqvae.quantizer)
        f_cont = model.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC)
    return {
        "encode": lambda: model.condition(x_B3HW),
        "transformer": lambda: model.transformer.generate(cond, model.vqvae.quantizer),
        "refiner": lambda: model.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC),
        "decode": lambda: model.vqvae.decode(f_cont),
        "end_to_end": lambda: model.restore(x_B3HW),
    }


@torch.no_grad()
def measure_cost(model: RestoreVAR, batch_size: int = 1, warmup: int = 2, repeats: int = 5,
                 seed: int = 0) -> dict[str, Any]:
    """Seconds per image (median), parameters and FLOPs per image of each component and end to end."""
    model.eval()
    device = next(model.parameters()).device
    size = model.cfg.vqvae.image_size
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1).to(device)
    seconds = {name: _timer(device, fn, warmup, repeats) / batch_size for name, fn in _stages(model, x).items()}
    flops = {}
    for name, fn in _stages(model, x[:1]).items():
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = int(counter.get_total_flops())
    params = component_params(model)
    params["end_to_end"] = sum(params.values())
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "image_size": size, "batch_size": batch_size, "warmup": warmup, "repeats": repeats,
            "timer": "cuda events" if device.type == "cuda" else "perf_counter", "statistic": "median",
            "seconds_per_image": seconds, "params": params, "flops_per_image": flops}
