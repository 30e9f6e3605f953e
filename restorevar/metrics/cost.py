"""What restoring one image costs, per component: seconds, parameters and FLOPs.

Timing: warm-up runs first, then the median of ``repeats`` runs; CUDA events on a GPU (after a
synchronize), ``time.perf_counter`` on a CPU. FLOPs: torch's FlopCounterMode on a batch of one (matmuls, attention and
convolutions; element-wise work is not counted). The device's name goes with every timing.
"""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from restorevar.inference.engine import Engine, InferenceOptions
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


def count_parameters(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def component_params(model: RestoreVAR) -> dict[str, int]:
    v = model.vqvae
    encode = [v.encoder] + ([v.quant_conv, v.quantizer] if model.cfg.transformer.conditioning == "discrete" else [])
    return {"encode": count_parameters(*encode), "transformer": count_parameters(model.transformer),
            "refiner": count_parameters(model.refiner), "decode": count_parameters(v.post_quant_conv, v.decoder)}


def _time_once(device: torch.device, fn: Callable[[], Any]) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(device: torch.device, fns: dict[str, Callable[[], Any]], warmup: int,
                     repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin (one of each per repeat) so that a machine that slows
    down or speeds up during the measurement moves every function alike, not the ones timed last."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_time_once(device, fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _stages(engine: Engine, x_B3HW: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Each component on the inputs it really receives, computed once up front."""
    cond = engine.encode(x_B3HW)
    gen = engine.generate(cond)
    f_cont = engine.refine(gen)
    return {
        "encode": lambda: engine.encode(x_B3HW),
        "transformer": lambda: engine.generate(cond),
        "refiner": lambda: engine.refine(gen),
        "decode": lambda: engine.decode(f_cont),
        "end_to_end": lambda: engine.restore(x_B3HW),
    }


def time_paths(engines: dict[str, Engine], x_B3HW: torch.Tensor, warmup: int, repeats: int) -> dict[str, Any]:
    """Per inference path: median seconds per image of each component and end to end (all paths and components
    interleaved), images per second, and on a GPU the peak memory of one end-to-end run."""
    B = x_B3HW.shape[0]
    device = next(iter(engines.values())).device
    fns = {(path, name): fn for path, e in engines.items() for name, fn in _stages(e, x_B3HW).items()}
    med = time_interleaved(device, fns, warmup, repeats)
    out: dict[str, Any] = {}
    for path, e in engines.items():
        sec = {name: med[(path, name)] / B for (p, name) in fns if p == path}
        peak = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            e.restore(x_B3HW)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        out[path] = {"seconds_per_image": sec, "images_per_second": 1 / sec["end_to_end"], "peak_memory_bytes": peak}
    return out


def count_flops(engine: Engine, x_1CHW: torch.Tensor) -> dict[str, int]:
    """FLOPs of each component on one image. SDPA runs its math backend here: the counter sees the fused CPU
    kernels as zero FLOPs, and which kernel runs depends on memory layout, so attention would come and go."""
    flops = {}
    for name, fn in _stages(engine, x_1CHW).items():
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = int(counter.get_total_flops())
    return flops


def random_images(batch_size: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1).to(device)


@torch.no_grad()
def measure_cost(model: RestoreVAR, batch_size: int = 1, warmup: int = 2, repeats: int = 5,
                 seed: int = 0, options: InferenceOptions | None = None) -> dict[str, Any]:
    """Seconds per image (median), parameters and FLOPs per image of each component and end to end.

    ``options`` picks the inference path (default: the fast fp32 path that evaluation and restore use).
    """
    engine = Engine(model, options)
    device = engine.device
    size = model.cfg.vqvae.image_size
    x = random_images(batch_size, size, seed, device)
    timing = time_paths({"model": engine}, x, warmup, repeats)["model"]
    params = component_params(model)
    params["end_to_end"] = sum(params.values())
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "image_size": size, "batch_size": batch_size, "warmup": warmup, "repeats": repeats,
            "timer": timer_name(device), "statistic": "median", "inference": asdict(engine.options),
            "seconds_per_image": timing["seconds_per_image"], "params": params,
            "flops_per_image": count_flops(engine, x[:1])}


def timer_name(device: torch.device) -> str:
    return "cuda events" if device.type == "cuda" else "perf_counter"


@torch.no_grad()
def measure_network_cost(net: torch.nn.Module, size: int, batch_size: int = 1, warmup: int = 2, repeats: int = 5,
                         seed: int = 0) -> dict[str, Any]:
    """The same figures as ``measure_cost`` for a network that restores in one pass (a baseline such as PromptIR),
    on the same random images: its one component is ``end_to_end``."""
    device = next(net.parameters()).device
    x = random_images(batch_size, size, seed, device)
    net.eval()
    sec = time_interleaved(device, {"end_to_end": lambda: net(x)}, warmup, repeats)["end_to_end"] / batch_size
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x[:1])
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "image_size": size, "batch_size": batch_size, "warmup": warmup, "repeats": repeats,
            "timer": timer_name(device), "statistic": "median",
            "seconds_per_image": {"end_to_end": sec}, "params": {"end_to_end": count_parameters(net)},
            "flops_per_image": {"end_to_end": int(counter.get_total_flops())}}
