"""params.yaml: profiles, typed stage configs, and validation before any work starts.

Layout: ``profile`` picks a column; every section (``model``, ``data``, one per training stage, ...) holds
one entry per profile. DVC tracks whole sections, so changing one stage's section re-runs that stage and
the ones after it, and switching ``profile`` never needs an edit of dvc.yaml.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from restorevar.config import from_dict
from restorevar.errors import UserError
from restorevar.inference.engine import DTYPES
from restorevar.train.common import ModelRef
from restorevar.train.decoder import DecoderTrainConfig
from restorevar.train.refiner import RefinerTrainConfig
from restorevar.train.tokenizer import TokenizerTrainConfig
from restorevar.train.transformer import TransformerTrainConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

TRAIN_STAGES = {
    "train_tokenizer": TokenizerTrainConfig,
    "finetune_decoder": DecoderTrainConfig,
    "train_transformer": TransformerTrainConfig,
    "train_refiner": RefinerTrainConfig,
}


@dataclass
class DataParams:
    source: Literal["synth", "datasets"] = "synth"
    # source=synth: the embedded synthetic benchmark
    size: int = 64
    train_per_degradation: int = 64
    test_per_degradation: int = 8
    seed: int = 0
    # source=datasets: registry names (restorevar data fetch), downloaded or adapted under `root`
    datasets: list[str] = field(default_factory=list)
    root: str = "data/raw"
    allow_download: bool = True

    def validate(self) -> None:
        if self.source == "datasets" and not self.datasets:
            raise UserError("data: source 'datasets' needs a non-empty list 'datasets'")


@dataclass
class Resources:
    cpu: float = 2
    gpu: float = 0  # a fraction shares one GPU between trials


@dataclass
class TuneParams:
    """How a stage runs under Ray Tune: resources, retries, and optional trials."""

    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    # name -> {dotted.key: value} applied to the stage config; each becomes a trial
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = ""  # how to pick the exported trial; empty = the only (or the `chosen`) variant
    mode: Literal["min", "max"] = "max"
    chosen: str = ""


@dataclass
class ProtocolParams:
    colour: Literal["rgb", "y"] = "rgb"
    crop_border: int = 0
    geometry: Literal["resize", "center_crop"] = "resize"


@dataclass
class CostParams:
    batch_size: int = 1
    warmup: int = 2
    repeats: int = 5


@dataclass
class EvalParams:
    protocol: ProtocolParams = field(default_factory=ProtocolParams)
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lpips", "musiq", "clipiqa"])
    baselines: list[str] = field(default_factory=lambda: ["identity", "vqvae_roundtrip"])
    external: dict[str, str] = field(default_factory=dict)  # method name -> folder of its outputs
    batch_size: int = 8
    max_images_per_degradation: int = 0  # 0 = all
    samples_per_degradation: int = 2
    cost: CostParams = field(default_factory=CostParams)
    device: str = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"  # the fast inference path's precision (restorevar.inference.engine)

    def check(self, where: str) -> None:
        from restorevar.metrics import KNOWN

        bad = [m for m in self.metrics if m not in KNOWN]
        if bad:
            raise UserError(f"{where}.metrics: unknown metric {bad[0]!r}; known: {', '.join(KNOWN)}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise UserError(f"{where}.baselines: unknown baseline {bad[0]!r}; known: {', '.join(BASELINES)}")
        clash = [n for n in self.external if n in (MODEL_METHOD, *BASELINES)]
        if clash:
            raise UserError(f"{where}.external: name {clash[0]!r} is taken by a built-in method; rename it")
        if self.batch_size < 1 or self.cost.batch_size < 1 or self.cost.repeats < 1:
            raise UserError(f"{where}: batch sizes and cost.repeats must be >= 1")
        if self.dtype not in DTYPES:
            raise UserError(f"{where}.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.protocol.crop_border < 0:
            raise UserError(f"{where}.protocol.crop_border must be >= 0")


@dataclass
class StatsParams:
    method: str = "restorevar"
    against: list[str] = field(default_factory=lambda: ["identity", "vqvae_roundtrip"])
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lpips"])
    confidence: float = 0.95
    n_boot: int = 2000
    n_perm: int = 10000
    seed: int = 0

    def check(self, where: str) -> None:
        if not 0 < self.confidence < 1:
            raise UserError(f"{where}.confidence must lie in (0, 1), got {self.confidence}")
        if self.n_boot < 100 or self.n_perm < 100:
            raise UserError(f"{where}: n_boot and n_perm must be >= 100")


@dataclass
class BenchParams:
    """`restorevar bench` on the trained model (stage `bench`); see benchmarks/bench.py."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    dtypes: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    warmup: int = 2
    repeats: int = 5
    agreement_images: int = 8
    train: bool = True
    train_batch_size: int = 8
    train_steps: int = 5
    seed: int = 0
    device: str = "auto"

    def check(self, where: str) -> None:
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad:
            raise UserError(f"{where}.dtypes: unknown dtype {bad[0]!r}; use one of: {', '.join(DTYPES)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"{where}.batch_sizes must be a non-empty list of sizes >= 1")
        if min(self.repeats, self.agreement_images, self.train_batch_size, self.train_steps) < 1 or self.warmup < 0:
            raise UserError(f"{where}: repeats, agreement_images, train_batch_size and train_steps must be >= 1, "
                            "warmup >= 0")


@dataclass
class ReportParams:
    grid_images_per_degradation: int = 2
    title: str = "RestoreVAR suite report"


@dataclass
class AblationVariant:
    set: dict[str, Any] = field(default_factory=dict)  # dotted keys on the stage's config
    needs: list[str] = field(default_factory=list)  # weights (metric names) the variant cannot run without


@dataclass
class AblationPretrain:
    """Train every variant first at a smaller image size, then fine-tune it at the model's own size."""
    fraction: float = 0.0  # of the model's image size (0.5: 256 px for the paper's 512); 0: no pre-training
    patch_nums: list[int] = field(default_factory=list)  # empty: the model's scales below the latent size + it
    loop: dict[str, Any] = field(default_factory=dict)  # overrides of the pre-training loop


@dataclass
class AblationFamily:
    stage: Literal["finetune_decoder", "train_transformer", "train_refiner"] = "train_refiner"
    paper_choice: str = ""
    claim: str = ""  # the paper's claim, tested against our numbers in the report
    loop: dict[str, Any] = field(default_factory=dict)  # overrides of every variant's loop (the reduced run)
    variants: dict[str, AblationVariant] = field(default_factory=dict)
    pretrain: AblationPretrain = field(default_factory=AblationPretrain)


@dataclass
class ScaleSpaceParams:
    split: int = 4  # scales [0, split) are "coarse"
    images_per_degradation: int = 8
    grid_images: int = 1


@dataclass
class AblationParams:
    families: dict[str, AblationFamily] = field(default_factory=dict)
    scale_space: ScaleSpaceParams = field(default_factory=ScaleSpaceParams)

    def check(self, where: str, names: list[str]) -> None:
        if sorted(self.families) != sorted(names):
            raise UserError(f"{where}.families must define exactly the families in ablation_families "
                            f"({', '.join(names)}); has {', '.join(self.families) or 'none'}")
        for name, fam in self.families.items():
            if fam.paper_choice not in fam.variants:
                raise UserError(f"{where}.families.{name}.paper_choice {fam.paper_choice!r} is not one of its "
                                f"variants: {', '.join(fam.variants)}")
            if fam.pretrain.fraction and fam.stage != "train_transformer":
                raise UserError(f"{where}.families.{name}.pretrain: only train_transformer families can pre-train "
                                f"at another size, not {fam.stage}")
            for vname, v in fam.variants.items():
                from restorevar.metrics import KNOWN

                bad = [n for n in v.needs if n not in KNOWN]
                if bad:
                    raise UserError(f"{where}.families.{name}.variants.{vname}.needs: unknown {bad[0]!r}")


MODEL_METHOD = "restorevar"
BASELINES = ("identity", "vqvae_roundtrip")


def load_raw(path: Path = PARAMS) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"params file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or "profile" not in data:
        raise UserError(f"{path} must be a mapping with a 'profile' key")
    return data


def _section(raw: dict[str, Any], name: str, profile: str) -> dict[str, Any]:
    sec = raw.get(name)
    if not isinstance(sec, dict):
        raise UserError(f"params.yaml: missing section '{name}'")
    if profile not in sec:
        raise UserError(f"params.yaml: section '{name}' has no entry for profile '{profile}' "
                        f"(has: {', '.join(sec)})")
    return copy.deepcopy(sec[profile]) or {}


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


@dataclass
class StageParams:
    name: str
    profile: str
    config: Any  # the typed trainer config
    config_dict: dict[str, Any]
    tune: TuneParams
    variants: dict[str, dict[str, Any]]  # name -> full config dict


class Params:
    def __init__(self, path: Path = PARAMS):
        self.path = path
        self.raw = load_raw(path)
        self.profile = self.raw["profile"]
        prof = self.raw.get("profiles", {})
        if self.profile not in prof:
            raise UserError(f"params.yaml: profile '{self.profile}' is not one of: {', '.join(prof) or 'none'}")
        self.model = from_dict(ModelRef, _section(self.raw, "model", self.profile), where=f"model.{self.profile}")
        self.model.build_config()  # a bad preset or override fails here, before any work
        self.data = from_dict(DataParams, _section(self.raw, "data", self.profile), where=f"data.{self.profile}")
        self.data.validate()
        self.evaluate = from_dict(EvalParams, _section(self.raw, "evaluate", self.profile),
                                  where=f"evaluate.{self.profile}")
        self.evaluate.check(f"evaluate.{self.profile}")
        self.stats = from_dict(StatsParams, _section(self.raw, "stats", self.profile), where=f"stats.{self.profile}")
        self.stats.check(f"stats.{self.profile}")
        self.bench = from_dict(BenchParams, _section(self.raw, "bench", self.profile), where=f"bench.{self.profile}")
        self.bench.check(f"bench.{self.profile}")
        self.report = from_dict(ReportParams, _section(self.raw, "report", self.profile), where=f"report.{self.profile}")
        self.ablation_families = list(self.raw.get("ablation_families") or [])
        self.ablations = from_dict(AblationParams, _section(self.raw, "ablations", self.profile),
                                   where=f"ablations.{self.profile}")
        self.ablations.check(f"ablations.{self.profile}", self.ablation_families)
        tracking = self.raw.get("tracking", {}) or {}
        unknown = set(tracking) - {"mlflow_uri", "ray_address", "ray_storage"}
        if unknown:
            raise UserError(f"params.yaml: unknown key tracking.{min(unknown)}")
        self.mlflow_uri = tracking.get("mlflow_uri") or f"sqlite:///{ROOT / 'mlflow.db'}"
        self.ray_address = tracking.get("ray_address") or None
        self.ray_storage = str((ROOT / (tracking.get("ray_storage") or "ray_results")).resolve())
        self.stages = {name: self._stage(name, cls) for name, cls in TRAIN_STAGES.items()}
        self.ablation_variants = {f: self._ablation_variants(f) for f in self.ablation_families}
        self.ablation_pretrain = {f: self._ablation_pretrain(f) for f in self.ablation_families}

    def _stage(self, name: str, cls) -> StageParams:
        sec = _section(self.raw, name, self.profile)
        where = f"{name}.{self.profile}"
        tune = from_dict(TuneParams, sec.pop("tune", {}) or {}, where=f"{where}.tune")
        sec["model"] = {"preset": self.model.preset, "overrides": list(self.model.overrides)}
        sec.setdefault("data", {})["train_manifest"] = self.train_manifest
        upstream = {"tokenizer_checkpoint": "train_tokenizer", "decoder_checkpoint": "finetune_decoder",
                    "transformer_checkpoint": "train_transformer"}
        for key, stage in upstream.items():
            if key in cls.__dataclass_fields__:
                sec[key] = str(checkpoint_path(stage))
        cfg = from_dict(cls, sec, where=where)
        variants = {}
        for vname, changes in (tune.variants or {"main": {}}).items():
            d = copy.deepcopy(sec)
            for k, v in (changes or {}).items():
                _set_dotted(d, k, v)
            from_dict(cls, d, where=f"{where}.tune.variants.{vname}")  # validate every variant up front
            variants[vname] = d
        if tune.chosen and tune.chosen not in variants:
            raise UserError(f"{where}.tune.chosen '{tune.chosen}' is not one of the variants: {', '.join(variants)}")
        if len(variants) > 1 and not tune.metric and not tune.chosen:
            raise UserError(f"{where}.tune: several variants need a metric or a chosen variant to export")
        return StageParams(name, self.profile, cfg, sec, tune, variants)

    def _ablation_variants(self, family: str) -> dict[str, dict[str, Any]]:
        """Each variant's full, validated stage config: the stage's own, the family's reduced loop, its changes."""
        fam = self.ablations.families[family]
        cls = TRAIN_STAGES[fam.stage]
        out = {}
        for vname, v in fam.variants.items():
            d = copy.deepcopy(self.stages[fam.stage].config_dict)
            d["loop"] = {**d.get("loop", {}), **fam.loop}
            for k, val in v.set.items():
                _set_dotted(d, k, copy.deepcopy(val))
            from_dict(cls, d, where=f"ablations.{self.profile}.families.{family}.variants.{vname}")
            out[vname] = d
        return out

    def _ablation_pretrain(self, family: str) -> dict[str, dict[str, Any]] | None:
        """Each variant's pre-training config (the variant at ``pretrain.fraction`` of the size), or None; validated."""
        fam = self.ablations.families[family]
        pre = fam.pretrain
        if not pre.fraction:
            return None
        where = f"ablations.{self.profile}.families.{family}.pretrain"
        v = self.model.build_config().vqvae
        size = round(v.image_size * pre.fraction)
        if not 0 < size < v.image_size or size % v.downsample:
            raise UserError(f"{where}.fraction {pre.fraction} gives {size} px; it must give a size below the model's "
                            f"{v.image_size} px and divisible by {v.downsample}")
        latent = size // v.downsample
        pn = list(pre.patch_nums) or [n for n in v.patch_nums if n < latent] + [latent]
        if pn[0] != v.patch_nums[0]:
            raise UserError(f"{where}.patch_nums must start at the model's first scale {v.patch_nums[0]}")
        out = {}
        for vname, d in self.ablation_variants[family].items():
            d = copy.deepcopy(d)
            d["model"]["overrides"] = list(d["model"]["overrides"]) + [
                f"vqvae.image_size={size}", f"vqvae.patch_nums={pn}"]
            d["data"]["crop"] = size
            d["loop"] = {**d["loop"], **pre.loop}
            d["any_resolution"] = True
            try:
                cfg = from_dict(TRAIN_STAGES[fam.stage], d, where=f"{where} ({vname})")
                cfg.model.build_config()
            except UserError as e:
                raise UserError(f"{where}: {e} (set pretrain.patch_nums to scales ending at the latent size)") from None
            out[vname] = d
        return out

    @property
    def data_dir(self) -> Path:
        return ROOT / "data" / "prepared"

    @property
    def train_manifest(self) -> str:
        return str(self.data_dir / "train.json")

    @property
    def test_manifest(self) -> str:
        return str(self.data_dir / "test.json")


def checkpoint_path(stage: str) -> Path:
    return ROOT / "checkpoints" / f"{stage}.pt"
