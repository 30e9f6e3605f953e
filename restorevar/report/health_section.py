"""The report's "Model health" section, from results/health.json (restorevar.analysis.health on the test
split): is the tokenizer above the thumbnail bar, does the transformer beat copying its input's tokens, does
greedy decoding collapse, and does the model read its condition at all."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from restorevar.report.document import Document

H = "health/"


def _f(v: float, d: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def health_section(doc: Document, results: Path) -> None:
    path = results / "health.json"
    if not path.exists():
        return
    from restorevar.analysis.health import health_table

    h = json.loads(path.read_text())
    overall, names = h["overall"], h.get("degradation_names", {})
    doc.heading("Model health")
    doc.text("Diagnostics of the evaluated model on the test split (restorevar.analysis.health). The tokenizer's "
             "continuous round trip must beat the bicubic thumbnail with as many pixels as its latent, or no "
             "restoration through it can beat a mild degradation; teacher-forced accuracy must beat copying the "
             "degraded image's own tokens; swapping each image's condition for another image's must change the "
             "predictions, or the model ignores its input.")
    groups = [("all", overall)] + [(f"{n}/{names.get(n, '')}", d) for n, d in sorted(h["per_dataset"].items())]
    rows = [{"test images": g, "n": int(d[H + "n_images"]),
             "round trip, discrete (dB)": _f(d[H + "roundtrip_psnr_discrete"], 2),
             "round trip, continuous (dB)": _f(d[H + "roundtrip_psnr_continuous"], 2),
             "bicubic thumbnail (dB)": _f(d[H + "thumbnail_psnr"], 2),
             "continuous − thumbnail": _f(d[H + "roundtrip_psnr_continuous"] - d[H + "thumbnail_psnr"], 2),
             "teacher-forced acc": _f(d[H + "tf_acc"]), "copy-input acc": _f(d[H + "copy_acc"]),
             "greedy distinct tokens": int(d[H + "greedy_distinct_tokens"]),
             "changed by a swapped condition": _f(d[H + "cond_swap_changed"])} for g, d in groups]
    doc.table(pd.DataFrame(rows), "Tokenizer ceiling against the thumbnail bar, and the transformer against copying "
              "its input; greedy decoding; clean images' tokens")
    doc.table(pd.DataFrame(health_table(overall)).map(lambda v: _f(v) if isinstance(v, float) else v),
              "Per scale, all test images: codebook usage and perplexity of the clean tokens, teacher-forced and "
              "copy-input accuracy, fraction of greedy (and teacher-forced) tokens changed by a swapped condition, "
              "distinct greedy tokens")
    gates = {k[len(H):]: v for k, v in overall.items() if k.startswith(H) and "gain" in k}
    doc.text("Condition gates (zero at initialisation): " + ", ".join(f"{k} {_f(v, 4)}" for k, v in gates.items())
             + ".")
