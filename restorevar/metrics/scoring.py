"""Score methods on a test manifest, image by image: the model, the baselines, and external outputs.

A method maps a batch of test items to restored images in [-1, 1] (or None where it has no output for an
item). Every method sees the same items under the same protocol, so rows pair up by image.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from restorevar.data.dataset import PairedDataset, PairedTransform
from restorevar.data.manifest import CLASS_NAMES
from restorevar.errors import UserError
from restorevar.fileio import ImageReadError, path_inside, read_image, write_png
from restorevar.imaging import from_uint8, to_uint8
from restorevar.inference.engine import Engine, InferenceOptions
from restorevar.metrics.iqa import MetricSuite
from restorevar.metrics.protocol import MetricProtocol

Method = Callable[[list[dict[str, Any]], torch.Tensor], list[torch.Tensor | None]]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------
def identity_method() -> Method:
    """The degraded input itself: the bar every restoration has to clear."""
    return lambda items, deg_B3HW: list(deg_B3HW)


def model_method(model, device: torch.device, options: InferenceOptions | None = None, **generate_kwargs) -> Method:
    """The model on the inference path ``options`` picks (default: the fast fp32 path)."""
    engine = Engine(model.to(device), options)

    def run(items, deg_B3HW):
        return list(engine.restore(deg_B3HW.to(device), **generate_kwargs).image_B3HW.cpu())
    return run


def network_method(net: torch.nn.Module, device: torch.device) -> Method:
    """A network that maps the degraded image to the restored one in a single pass (a baseline such as PromptIR),
    its output clamped to the images' [-1, 1]."""
    net = net.to(device).eval()

    def run(items, deg_B3HW):
        with torch.no_grad():
            return list(net(deg_B3HW.to(device)).clamp(-1, 1).float().cpu())
    return run


def copy_input_method(vqvae, device: torch.device, continuous: bool = False) -> Method:
    """The degraded image's own tokens, decoded by ``vqvae`` (the study's decoder): what a model that only copies its
    input would score. Beside ``identity`` it is the bar that shows whether the model restores or merely copies.
    ``continuous`` decodes the input's continuous latent instead: the best any model painting through this
    autoencoder can keep of its input, quantization aside."""
    def run(items, deg_B3HW):
        return list(_autoencode(vqvae, deg_B3HW.to(device), continuous).float().cpu())
    return run


def roundtrip_method(vqvae, device: torch.device) -> Method:
    """The clean image through the tokenizer and back (discrete tokens): the upper bound of token prediction."""
    return reconstruction_method(vqvae, device, continuous=False)


def _autoencode(vqvae, x_B3HW: torch.Tensor, continuous: bool) -> torch.Tensor:
    """``x_B3HW`` through the autoencoder: its continuous latent decoded, or its tokens decoded."""
    with torch.no_grad():
        f = vqvae.encode(x_B3HW)
        return vqvae.decode(f if continuous else vqvae.quantizer.idx_to_f_hat(vqvae.quantize(f).idx_list))


def reconstruction_method(vqvae, device: torch.device, continuous: bool = True) -> Method:
    """The clean image through an autoencoder: its continuous latent (or its tokens) decoded again."""
    def run(items, deg_B3HW):
        have = [j for j, it in enumerate(items) if "clean" in it]
        out: list[torch.Tensor | None] = [None] * len(items)
        if have:
            rec = _autoencode(vqvae, torch.stack([items[j]["clean"] for j in have]).to(device), continuous)
            for j, r in zip(have, rec.float().cpu()):
                out[j] = r
        return out
    return run


def external_method(folder: str | Path, entries, protocol: MetricProtocol) -> tuple[Method, list[str]]:
    """Outputs of another method, matched to test images by file name (any image extension).

    Returns the method and a list that collects the names it could not find.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"external results folder not found: {folder}; fix evaluate.external in params.yaml")
    by_stem: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTS:
            by_stem.setdefault(p.stem, p)
    missing: list[str] = []

    def load(item) -> torch.Tensor | None:
        name = Path(entries[item["index"]].image_path)
        path = folder / name.name if (folder / name.name).exists() else by_stem.get(name.stem)
        if path is None:
            missing.append(name.name)
            return None
        im = read_image(path)
        size = protocol.size
        if protocol.geometry == "resize":
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        else:
            w, h = im.size
            if min(w, h) < size:
                raise ImageReadError(f"{path} ({w}x{h}) is smaller than the {size} px centre crop")
            im = im.crop(((w - size) // 2, (h - size) // 2, (w - size) // 2 + size, (h - size) // 2 + size))
        return from_uint8(im)

    return (lambda items, deg_B3HW: [load(it) for it in items]), missing


# ------------------------------------------------------------------------------------------------
# Evaluation loop
# ------------------------------------------------------------------------------------------------
def evaluate(manifest: str | Path, methods: dict[str, Method], suite: MetricSuite, batch_size: int = 8,
             max_per_stratum: int = 0, samples_per_stratum: int = 0, sample_dir: Path | None = None,
             progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Per-image rows for every method: ``{method: [{method, dataset, degradation, image_id, metric, value,
    protocol}, ...]}``. The first ``samples_per_stratum`` images of each (dataset, degradation) are also
    saved as PNGs (input, target, each method) under ``sample_dir``."""
    p = suite.protocol
    ds = PairedDataset(manifest, PairedTransform(crop=p.size, mode="test", test_protocol=p.geometry),
                       require_target=False)
    order: list[int] = []
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for i, e in enumerate(ds.entries):
        key = (e.dataset, e.degradation)
        if max_per_stratum and seen[key] >= max_per_stratum:
            continue
        seen[key] += 1
        order.append(i)
    if not order:
        raise UserError(f"{manifest} holds no test images")
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    saved: dict[tuple[str, int], int] = defaultdict(int)
    bar = tqdm(range(0, len(order), batch_size), desc="evaluate", unit="batch", disable=not progress)
    for b in bar:
        items = [ds.item(i) for i in order[b:b + batch_size]]
        deg = torch.stack([it["degraded"] for it in items])
        outputs = {name: fn(items, deg) for name, fn in methods.items()}
        for name, outs in outputs.items():
            with_target = [j for j, o in enumerate(outs) if o is not None and "clean" in items[j]]
            without = [j for j, o in enumerate(outs) if o is not None and "clean" not in items[j]]
            for keep in (with_target, without):  # no-reference sets get only the no-reference metrics
                if not keep:
                    continue
                pred01 = (torch.stack([outs[j] for j in keep]) + 1) / 2
                tgt01 = (torch.stack([items[j]["clean"] for j in keep]) + 1) / 2 if keep is with_target else None
                for metric, values in suite.score(pred01, tgt01).items():
                    for j, v in zip(keep, values):
                        it = items[j]
                        rows[name].append({"method": name, "dataset": it["dataset"],
                                           "degradation": CLASS_NAMES[it["degradation"]],
                                           "image_id": str(it["id"]), "metric": metric, "value": float(v),
                                           "protocol": p.id})
        if sample_dir is not None and samples_per_stratum:
            for j, it in enumerate(items):
                key = (it["dataset"], it["degradation"])
                if saved[key] >= samples_per_stratum:
                    continue
                saved[key] += 1
                folder = path_inside(sample_dir, it["dataset"], CLASS_NAMES[it["degradation"]], str(it["id"]))
                write_png(folder / "input.png", to_uint8(it["degraded"]))
                if "clean" in it:
                    write_png(folder / "target.png", to_uint8(it["clean"]))
                for name, outs in outputs.items():
                    if outs[j] is not None:
                        write_png(folder / f"{name}.png", to_uint8(outs[j]))
    return rows
