"""Map the published VAR / RestoreVAR checkpoints onto this package's module names.

Four published files (spec section 10): VAR's VQ-VAE ``vae_ch160v4096z32.pth``, VAR ``var_d16.pth``,
RestoreVAR's fine-tuned VAE ``vae_restorevar.ckpt`` and ``restorevar.pth`` (transformer + refiner).
Each official key is renamed by the first matching rule, ignored with a stated reason (buffers we
recompute), or reported as unmapped. Nothing is guessed: an unmapped key is an error for strict kinds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from restorevar.errors import UserError

# (official pattern, our name) applied with re.fullmatch; the first match wins.
_VAE_RULES = [
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.nin_shortcut\.(\w+)", r"encoder.levels.\1.blocks.\2.shortcut.\3"),
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.(\w+)", r"encoder.levels.\1.blocks.\2.\3.\4"),
    (r"encoder\.down\.(\d+)\.attn\.(\d+)\.proj_out\.(\w+)", r"encoder.levels.\1.attns.\2.proj.\3"),
    (r"encoder\.down\.(\d+)\.attn\.(\d+)\.(\w+)\.(\w+)", r"encoder.levels.\1.attns.\2.\3.\4"),
    (r"encoder\.down\.(\d+)\.downsample\.conv\.(\w+)", r"encoder.levels.\1.resample.conv.\2"),
    (r"(encoder|decoder)\.mid\.block_(\d)\.nin_shortcut\.(\w+)", r"\1.mid.block\2.shortcut.\3"),
    (r"(encoder|decoder)\.mid\.block_(\d)\.(\w+)\.(\w+)", r"\1.mid.block\2.\3.\4"),
    (r"(encoder|decoder)\.mid\.attn_1\.proj_out\.(\w+)", r"\1.mid.attn.proj.\2"),
    (r"(encoder|decoder)\.mid\.attn_1\.(\w+)\.(\w+)", r"\1.mid.attn.\2.\3"),
    (r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(\w+)", r"\1.\2.\3"),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.nin_shortcut\.(\w+)", r"decoder.up.\1.blocks.\2.shortcut.\3"),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(\w+)", r"decoder.up.\1.blocks.\2.\3.\4"),
    (r"decoder\.up\.(\d+)\.attn\.(\d+)\.proj_out\.(\w+)", r"decoder.up.\1.attns.\2.proj.\3"),
    (r"decoder\.up\.(\d+)\.attn\.(\d+)\.(\w+)\.(\w+)", r"decoder.up.\1.attns.\2.\3.\4"),
    (r"decoder\.up\.(\d+)\.upsample\.conv\.(\w+)", r"decoder.up.\1.resample.conv.\2"),
    (r"(quant_conv|post_quant_conv)\.(\w+)", r"\1.\2"),
    (r"quantize\.embedding\.weight", r"quantizer.codebook.weight"),
    (r"quantize\.quant_resi\.qresi_ls\.(\d+)\.(\w+)", r"quantizer.phi.convs.\1.\2"),
    (r"quantize\.ema_vocab_hit_SV", r"quantizer.usage_ema_SV"),
]

_BLOCK_RULES = [
    (r"blocks\.(\d+)\.attn\.mat_qkv\.weight", r"blocks.\1.self_attn.qkv.weight"),
    (r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.self_attn.\2"),
    (r"blocks\.(\d+)\.attn\.scale_mul_1H11", r"blocks.\1.self_attn.cos_scale.log_scale_1H11"),
    (r"blocks\.(\d+)\.attn\.proj\.(\w+)", r"blocks.\1.self_attn.proj.\2"),
    (r"blocks\.(\d+)\.ffn\.(fc1|fc2)\.(\w+)", r"blocks.\1.ffn.\2.\3"),
    (r"blocks\.(\d+)\.cross_attn\.scale_mul_1H11", r"blocks.\1.cross_attn.cos_scale.log_scale_1H11"),
    (r"blocks\.(\d+)\.cross_attn\.gain", r"blocks.\1.cross_attn.gain"),
    (r"blocks\.(\d+)\.cross_attn\.(norm_q|norm_kv|q_proj|kv_proj|out_proj)\.(\w+)", r"blocks.\1.cross_attn.\2.\3"),
    (r"(class_emb|lvl_embed|word_embed|head)\.(\w+)", r"\1.\2"),
    (r"cond_proj4\.(\w+)", r"cond_proj.\1"),
    (r"word_embed_cond\.(\w+)", r"cond_embed.\1"),
    (r"lvl_embed_cond\.weight", r"cond_lvl_embed.weight"),
    (r"global_embed\.(\w+)", r"sos_cond_embed.\1"),
    (r"global_embed_gain", r"sos_gain"),
    (r"(pos_start|pos_1LC)", r"\1"),
]

_REFINER_RULES = [
    (r"vae_refiner\.(norm_in|norm_in_cond|proj_in|proj_in_cond|proj_out)\.(\w+)", r"\1.\2"),
    (r"vae_refiner\.pos_embedding", r"pos_1NW"),
    (r"vae_refiner\.pos_embedding_cond", r"pos_cond_1LW"),
    (r"vae_refiner\.transformer\.layers\.(\d+)\.0\.to_out\.0\.(\w+)", r"layers.\1.attn.to_out.\2"),
    (r"vae_refiner\.transformer\.layers\.(\d+)\.0\.(norm|to_qkv)\.(\w+)", r"layers.\1.attn.\2.\3"),
    (r"vae_refiner\.transformer\.layers\.(\d+)\.1\.net\.(\d+)\.(\w+)", r"layers.\1.ffn.\2.\3"),
    (r"vae_refiner\.transformer\.layers\.(\d+)\.2\.(\w+)\.(\w+)", r"layers.\1.cross.\2.\3"),
    (r"vae_refiner\.transformer\.norm\.(\w+)", r"norm_out.\1"),
]

# Buffers the reference code recomputes at construction; we recompute them too.
_RECOMPUTED = {
    "attn_bias_for_masking": "block-causal mask, rebuilt from patch_nums",
    "lvl_1L": "scale index per token, rebuilt from patch_nums",
    "lvl_1L_cond": "conditioning level index, rebuilt",
    "freqs_cis": "RoPE table, rebuilt from patch_nums and head dim",
    "freqs_cis_cross": "conditioning RoPE table, rebuilt",
}
_CONSTANT = (r"blocks\.\d+\.attn\.zero_k_bias", "constant zero k-bias buffer; the k projection has no bias")
_VAR_DROPPED = (r"(blocks\.\d+\.ada_lin|head_nm\.ada_lin)\.\d+\.\w+", "AdaLN, removed in RestoreVAR")

# Which of our components each published file fills.
TARGETS = {"vqvae": ["vqvae"], "restorevar": ["transformer", "refiner"], "var_d16": ["transformer"]}
KINDS = {
    "vqvae": "a VQ-VAE (vae_ch160v4096z32.pth or vae_restorevar.ckpt)",
    "restorevar": "RestoreVAR transformer + refiner (restorevar.pth)",
    "var_d16": "VAR d16 (var_d16.pth), loaded non-strictly into the RestoreVAR transformer",
}
# Names and shapes of the published checkpoints (facts read off the reference model definitions), shipped
# with the package so that the compatibility check runs in any clone.
OFFICIAL_SHAPES = Path(__file__).resolve().parent / "reference" / "official_state_dict_shapes.json"
MANIFEST_KINDS = {"vae_ch160v4096z32": "vqvae", "vae_restorevar": "vqvae", "restorevar_d16_512": "restorevar",
                  "var_d16": "var_d16"}


@dataclass
class ConversionReport:
    kind: str
    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    mapped: int = 0
    ignored: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # our keys nobody provided, per component

    def summary(self) -> dict[str, Any]:
        ignored_by_reason: dict[str, int] = {}
        for reason in self.ignored.values():
            ignored_by_reason[reason] = ignored_by_reason.get(reason, 0) + 1
        return {
            "kind": self.kind,
            "keys_mapped": self.mapped,
            "keys_ignored": len(self.ignored),
            "ignored_reasons": ignored_by_reason,
            "unmapped": self.unmapped,
            "shape_mismatches": self.shape_mismatches,
            "missing": {k: v for k, v in self.missing.items() if v},
        }


def rename_by_rules(key: str, rules: list[tuple[str, str]]) -> str | None:
    """``key`` renamed by the first rule (an official pattern, re.fullmatch, and its expansion) that matches, or None."""
    for pat, repl in rules:
        m = re.fullmatch(pat, key)
        if m:
            return m.expand(repl)
    return None


def _decoder_level(ours: str, n_levels: int) -> str:
    """Official decoders number levels by resolution (up.0 = full size); ours by execution order."""
    return re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.levels.{n_levels - 1 - int(m.group(1))}.", ours)


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint (the largest dict of tensors) and strip DDP prefixes."""
    best: dict[str, torch.Tensor] = {}

    def visit(o: Any) -> None:
        nonlocal best
        if isinstance(o, dict):
            tensors = {k: v for k, v in o.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if len(tensors) > len(best):
                best = tensors
            for v in o.values():
                if isinstance(v, dict):
                    visit(v)

    visit(obj)
    if not best:
        raise UserError("no tensors found in the file; is it a model checkpoint?")
    return {k.removeprefix("module."): v for k, v in best.items()}


def convert(kind: str, sd: dict[str, torch.Tensor], model) -> ConversionReport:
    """Rename an official state dict for ``model`` (a RestoreVAR); check every shape against it."""
    if kind not in KINDS:
        raise UserError(f"unknown checkpoint kind {kind!r}; choose one of: {', '.join(KINDS)}")
    rep = ConversionReport(kind)
    n_levels = len(model.cfg.vqvae.ch_mult)
    targets = TARGETS[kind]
    expected = {c: {k: tuple(v.shape) for k, v in getattr(model, c).state_dict().items()} for c in targets}
    for c in targets:
        rep.components[c] = {}
    for key, tensor in sd.items():
        comp, ours = None, None
        if key in _RECOMPUTED:
            rep.ignored[key] = _RECOMPUTED[key]
            continue
        if re.fullmatch(_CONSTANT[0], key):
            if tensor.device.type != "meta" and tensor.count_nonzero() != 0:
                raise UserError(f"{key} should be all zeros but is not; the file is not a VAR-family checkpoint")
            rep.ignored[key] = _CONSTANT[1]
            continue
        if kind == "vqvae":
            ours = rename_by_rules(key, _VAE_RULES)
            comp = "vqvae"
            if ours is not None:
                ours = _decoder_level(ours, n_levels)
        elif key.startswith("vae_refiner.") and kind == "restorevar":
            comp, ours = "refiner", rename_by_rules(key, _REFINER_RULES)
        else:
            comp, ours = "transformer", rename_by_rules(key, _BLOCK_RULES)
            if kind == "var_d16" and re.fullmatch(_VAR_DROPPED[0], key):
                rep.ignored[key] = _VAR_DROPPED[1]
                continue
        if ours is None or ours not in expected[comp]:
            if kind == "var_d16" and ours is None:
                rep.unmapped.append(key)
            elif kind == "var_d16":
                rep.ignored[key] = "no counterpart in this transformer variant (absolute positions are RoPE here)"
            else:
                rep.unmapped.append(key if ours is None else f"{key} -> {ours} (no such parameter)")
            continue
        if tuple(tensor.shape) != expected[comp][ours]:
            if ours == "quantizer.usage_ema_SV" and tensor.shape[1:] == expected[comp][ours][1:]:
                # codebook-usage statistics, one row per scale: another scale schedule starts them afresh
                rep.ignored[key] = (f"usage statistics for {tensor.shape[0]} scales, reset for this model's "
                                    f"{expected[comp][ours][0]}")
                rep.components[comp][ours] = torch.zeros(expected[comp][ours])
                continue
            if kind == "var_d16":
                rep.ignored[key] = f"shape {tuple(tensor.shape)} differs from ours {expected[comp][ours]}"
                continue
            rep.shape_mismatches.append(f"{key}: {tuple(tensor.shape)} vs {ours}: {expected[comp][ours]}")
            continue
        rep.components[comp][ours] = tensor
        rep.mapped += 1
    for c in targets:
        rep.missing[c] = sorted(set(expected[c]) - set(rep.components[c]))
    return rep


def fill_missing(rep: ConversionReport, model) -> list[str]:
    """For non-strict loads, take the keys the file lacks from ``model``'s fresh initialisation."""
    filled = []
    for comp, keys in rep.missing.items():
        own = getattr(model, comp).state_dict()
        for k in keys:
            rep.components[comp][k] = own[k].detach().clone()
            filled.append(f"{comp}.{k}")
    return filled


def is_clean(rep: ConversionReport) -> bool:
    strict = rep.kind != "var_d16"
    return not rep.unmapped and not rep.shape_mismatches and (not strict or not any(rep.missing.values()))


# ------------------------------------------------------------------------------------------------
# Starting a training run from the published VAR weights
# ------------------------------------------------------------------------------------------------
VAR_INIT = {"var": ("var_vae", "vqvae"), "var_d16": ("var_d16", "var_d16")}  # init_from -> (weight file, kind)


def load_official_into(model, init_from: str, cache: Path | None = None) -> dict[str, Any]:
    """Fill ``model`` (a RestoreVAR) from VAR's published file for ``init_from`` ('var': the VQ-VAE, strictly;
    'var_d16': the transformer, non-strictly, what reads the condition newly initialised, as the paper does).

    The file comes from the weights cache (``restorevar data fetch-weights``) and is unpickled only after its
    size and full SHA-256 matched the published ones, with ``weights_only=True``. Returns the conversion summary.
    """
    from restorevar.data import weights

    spec = weights.BY_NAME[VAR_INIT[init_from][0]]
    cache = Path(cache) if cache is not None else weights.default_cache()
    try:  # hashes the whole file once, then loads those bytes
        sd = unwrap_state_dict(weights.load_verified(spec, cache))
    except weights.WeightRefused as e:
        raise UserError(f"init_from {init_from}: {e}") from None
    return convert_into(VAR_INIT[init_from][1], sd, model, lambda first, n: (
        f"init_from {init_from}: {spec.relpath} does not fit this model ({first}; {n} problems in all); "
        "the paper preset is the one VAR's weights fit"))


def convert_into(kind: str, sd: dict[str, torch.Tensor], model, fail) -> dict[str, Any]:
    """Convert ``sd`` as ``kind`` and load it into ``model``'s components strictly (VAR d16: non-strictly, what it
    lacks newly initialised). Returns the summary; a file that does not fit raises a UserError worded by
    ``fail(first_problem, number_of_problems)``."""
    rep = convert(kind, sd, model)
    summary = rep.summary()
    if kind == "var_d16":
        summary["dropped"] = sorted(rep.ignored)
        summary["newly_initialised"] = fill_missing(rep, model)
        summary["missing"] = {}
    if not is_clean(rep):
        problems = rep.unmapped + rep.shape_mismatches + [f"missing {k}" for v in rep.missing.values() for k in v]
        raise UserError(fail(problems[0], len(problems)))
    for comp, state in rep.components.items():
        getattr(model, comp).load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return summary
