"""Checks of a whole profile before any work starts (``python -m pipelines.validate``, ``make repro``): every
section parsed, the settings that span sections, the shipped weights, and what the profile needs that is not
here yet (published weights, datasets), each with the command that gets it."""
from __future__ import annotations

from pathlib import Path

from pipelines.params import Params
from pipelines.params_schema import PRETRAIN_STAGES, SECTIONS, TRAIN_STAGES, train_config_class
from pipelines.params_yaml import PARAMS, ROOT
from restorevar.config import from_dict
from restorevar.errors import UserError


def check_profile(p: Params) -> Params:
    """Parse every section of this profile and check what spans sections; raises UserError naming the key."""
    profiles = p.raw.get("profiles")
    if not isinstance(profiles, list) or not profiles or not all(isinstance(q, str) for q in profiles):
        raise UserError(f"params.yaml: profiles must be the list of profile names, got {profiles!r}")
    if p.profile not in profiles:
        raise UserError(f"params.yaml: profile '{p.profile}' is not one of: {', '.join(profiles)}")
    unknown = [k for k in p.raw if k not in SECTIONS]
    if unknown:
        raise UserError(f"params.yaml: unknown section '{unknown[0]}'; the sections are: {', '.join(SECTIONS)}")
    _ = p.model, p.data, p.evaluate, p.stats, p.bench, p.report, p.tracking  # read: checked
    dict(p.stages)  # every training stage with every variant
    p.ablations.check_families(p.where("ablations"), p.ablation_families)
    for family in p.ablation_families:
        p.ablation_variants[family]  # looking an entry up builds and checks it
        p.ablation_pretrain[family]
    _check_sizes(p)
    _check_pretrained(p)
    return p

def _check_pretrained(p: Params) -> None:
    """A stage that starts from the shipped weights (``init_from: pretrained``) fails here, before any work,
    when they are missing or do not match their card."""
    from restorevar.pretrained import pretrained_path

    part = {("train_tokenizer", "pretrained"): "tokenizer", ("train_transformer", "pretrained"): "prior",
            ("train_transformer", "pretrained_restoration"): "restoration"}
    for (stage, init), name in part.items():
        if any(c.get("init_from") == init for c in p.stages[stage].variants.values()):
            pretrained_path(p.model.preset, name)

def preflight(p: Params) -> list[str]:
    """What this profile needs that is not here yet, one line each with the command that gets it: the
    published weights its stages start from or require, and its datasets or manifests. Only presence and
    size are checked here; every file is hashed in full before it is loaded."""
    from restorevar.data import weights

    needs: dict[str, str] = {}
    init_weights = {"train_tokenizer": {"var": "var_vae"}, "train_transformer": {"var_d16": "var_d16"}}
    for stage, by_init in init_weights.items():
        for c in p.stages[stage].variants.values():
            if c.get("init_from") in by_init:
                needs[by_init[c["init_from"]]] = f"{p.where(stage)}.init_from {c['init_from']}"
    if any(c.get("perceptual_required") for c in p.stages["finetune_decoder"].variants.values()):
        for spec in weights.WEIGHTS:
            if "lpips" in spec.needed_by:
                needs[spec.name] = f"{p.where('finetune_decoder')}.perceptual_required"
    cache = weights.default_cache()
    out = []
    for name, why in needs.items():
        spec = weights.BY_NAME[name]
        path = cache / spec.relpath
        if not path.is_file() or (spec.size is not None and path.stat().st_size != spec.size):
            state = "missing" if not path.is_file() else f"{path.stat().st_size} bytes, not {spec.size}"
            out.append(f"weights {spec.relpath} ({state} under {cache}; for {why}): "
                       f"restorevar data fetch-weights --cache {cache}")
    d = p.data
    if d.source == "datasets":
        for name in d.datasets:
            folder = ROOT / d.root / name
            if not folder.is_dir() or not any(folder.iterdir()):
                out.append(f"dataset {name} (no files in {folder}): restorevar data fetch {name} --root {d.root}")
    elif d.source == "manifests":
        for name in (*d.train_manifests, *d.test_manifests):
            if not (ROOT / d.root / name).is_file():  # relative to root, as the data stage reads them
                out.append(f"manifest {name} (not found; {p.where('data')}): copy it from the official "
                           "code's release (its trainset.json and test_jsons/) or fix the path")
        if not (ROOT / d.root).is_dir():
            out.append(f"image root {d.root} (not a folder; {p.where('data')}.root): the folder the "
                       "manifests' paths start from")
    return out

def _check_sizes(p: Params) -> None:
    """The synthetic images are ``data.size`` px square: every training crop must fit in them, and so must
    the model's size where the test protocol crops rather than resizes."""
    d = p.data
    if d.source != "synth":
        return  # real photographs: their sizes are known only once fetched
    where_size = f"{p.where('data')}.size"
    runs = [(f"{p.where(s)}.tune.variants.{v}" if len(p.stages[s].variants) > 1 else p.where(s), s, c)
            for s in (*PRETRAIN_STAGES, *TRAIN_STAGES) for v, c in p.stages[s].variants.items()]
    for family in p.ablation_families:
        stage = p.ablations.families[family].stage
        runs += [(f"{p.where('ablations')}.families.{family}.variants.{v}", stage, c)
                 for v, c in p.ablation_variants[family].items()]
        runs += [(f"{p.where('ablations')}.families.{family}.pretrain ({v})", stage, c)
                 for v, c in (p.ablation_pretrain[family] or {}).items()]
    for where, stage, config in runs:
        data = from_dict(train_config_class(stage), config).data
        if data.pairs == "onthefly":
            continue  # crops of whole photographs, not of the synthetic images
        if data.resize_shorter is None and data.crop > d.size:
            raise UserError(f"{where}.data.crop {data.crop} is larger than the {d.size} px synthetic images "
                            f"({where_size}); lower the crop or raise the size")
        if data.resize_shorter is not None and data.crop > data.resize_shorter:
            raise UserError(f"{where}.data.crop {data.crop} is larger than its resize_shorter "
                            f"{data.resize_shorter}; lower the crop or raise resize_shorter")
    image_size = p.model.build_config().vqvae.image_size
    if p.evaluate.protocol.geometry == "center_crop" and d.size < image_size:
        raise UserError(f"{p.where('evaluate')}.protocol.geometry center_crop needs test images of at "
                        f"least the model's {image_size} px, but {where_size} is {d.size}; raise it or use resize")


def check_all(path: Path = PARAMS) -> list[Params]:
    """Every profile of the file checked (``pipelines.validate``): a typo in any column fails, naming it.
    The chosen profile comes first."""
    chosen = check_profile(Params(path))
    return [chosen] + [check_profile(Params(path, profile=q)) for q in chosen.raw["profiles"] if q != chosen.profile]
