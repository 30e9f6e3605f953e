"""params.yaml's schema: the stages and sections it holds, and one typed dataclass per section outside the
trainers' own configs (those live beside their trainers, ``restorevar.train.*``), each with its bounds check."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from restorevar.config import check_range
from restorevar.errors import UserError

# the pretraining tier (pretrain/pipeline.yaml, `make pretrain`): the weights the study's training starts from
PRETRAIN_STAGES = ("pretrain_tokenizer", "pretrain_prior", "pretrain_restoration")
TRAIN_STAGES = ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner", "train_promptir")
# stages that train a baseline, whose model is their own entry's (`model: {preset, overrides}`), not the `model`
# section's RestoreVAR
BASELINE_STAGES = ("train_promptir",)
# sections that hold one entry per profile; the others are shared by all profiles
PROFILE_SECTIONS = ("model", "data", *PRETRAIN_STAGES, *TRAIN_STAGES, "evaluate", "stats", "bench", "report",
                    "ablations")
# the checkpoint each stage reads, by config key: the stage that makes it
UPSTREAM = {
    "pretrain_prior": {"tokenizer_checkpoint": "pretrain_tokenizer"},
    "pretrain_restoration": {"tokenizer_checkpoint": "pretrain_tokenizer", "init_from": "pretrain_prior"},
    "finetune_decoder": {"tokenizer_checkpoint": "train_tokenizer"},
    "train_transformer": {"tokenizer_checkpoint": "train_tokenizer"},
    "train_refiner": {"decoder_checkpoint": "finetune_decoder", "transformer_checkpoint": "train_transformer"},
}
SECTIONS = ("profile", "profiles", "tracking", "ablation_families", *PROFILE_SECTIONS)
# what a stage may read without listing it in its dvc.yaml params: where its runs are logged and how Ray is
# reached change nothing it computes, and listing them would re-run the whole study for a new MLflow address
UNTRACKED = ("tracking",)
# Bounds of the numeric settings outside the trainers' configs (theirs: restorevar.train.common): far beyond any
# run, yet tight enough that a typo fails here rather than as a hang, an overflow or a Ray request never met
MAX_BATCH_SIZE = 65_536
MAX_PIXELS = 16_384  # a border or side, in pixels
MAX_REPEATS = 10_000  # timing repeats and warm-up runs
MAX_IMAGES = 10_000_000  # images or samples per degradation, bootstrap or permutation draws
MAX_SEED = 2**32 - 1
MAX_CPUS = 1024
MAX_GPUS = 64
MAX_WORKERS = 1024
MAX_FAILURES = 100

MODEL_METHOD = "restorevar"
BASELINES = ("identity", "copy_input", "vqvae_roundtrip", "promptir")


def train_config_class(stage: str) -> type:
    """The typed trainer config of a training stage (imported here, not at the top: see the docstring)."""
    from restorevar.train.decoder import DecoderTrainConfig
    from restorevar.train.prior import PriorTrainConfig
    from restorevar.train.promptir import PromptIRTrainConfig
    from restorevar.train.refiner import RefinerTrainConfig
    from restorevar.train.tokenizer import TokenizerTrainConfig
    from restorevar.train.transformer import TransformerTrainConfig

    return {"pretrain_tokenizer": TokenizerTrainConfig, "pretrain_prior": PriorTrainConfig,
            "pretrain_restoration": TransformerTrainConfig,
            "train_tokenizer": TokenizerTrainConfig, "finetune_decoder": DecoderTrainConfig,
            "train_transformer": TransformerTrainConfig, "train_refiner": RefinerTrainConfig,
            "train_promptir": PromptIRTrainConfig}[stage]


@dataclass
class DataParams:
    source: Literal["synth", "datasets", "manifests"] = "synth"
    # source=synth: the embedded synthetic benchmark
    size: int = 64
    train_per_degradation: int = 64
    test_per_degradation: int = 8
    seed: int = 0
    # source=datasets: registry names (restorevar data fetch), downloaded or adapted under `root`
    datasets: list[str] = field(default_factory=list)
    root: str = "data/raw"  # source=manifests: the folder their relative paths start from
    allow_download: bool = True
    # source=manifests: JSON manifests of the official code's format (its trainset.json and test_jsons/*.json),
    # relative to `root` (or absolute)
    train_manifests: list[str] = field(default_factory=list)
    test_manifests: list[str] = field(default_factory=list)

    def check(self, where: str) -> None:
        if self.source == "datasets":
            if not self.datasets:
                raise UserError(f"{where}: source 'datasets' needs a non-empty list 'datasets'")
            return
        if self.source == "manifests":
            if not self.train_manifests or not self.test_manifests:
                raise UserError(f"{where}: source 'manifests' needs non-empty lists 'train_manifests' and "
                                "'test_manifests'")
            return
        from restorevar.data.synth import SynthConfig

        try:  # the synthetic benchmark's own limits, worded as its command-line flags
            SynthConfig(size=self.size, train_per_degradation=self.train_per_degradation,
                        test_per_degradation=self.test_per_degradation, seed=self.seed).validate()
        except UserError as e:
            flags = re.sub(r"--([a-z-]+)", lambda m: f"{where}.{m.group(1).replace('-', '_')}", str(e))
            raise UserError(flags) from None


@dataclass
class Resources:
    cpu: float = 2
    gpu: float = 0  # a fraction shares one GPU between trials


@dataclass
class TuneParams:
    """How a stage runs under Ray Tune: resources, retries, and optional trials."""

    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    # name -> changes merged into the stage config, nested as it is written ({loop: {lr: 0.0003}}); each a trial
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = ""  # how to pick the exported trial; empty = the only (or the `chosen`) variant
    mode: Literal["min", "max"] = "max"
    chosen: str = ""
    # data parallelism: with workers > 1 each trial is a Ray Train TorchTrainer (DDP) of that many ranks sharing
    # every batch of loop.batch_size, each rank with these resources (default 1 CPU, no GPU; `resources` is then
    # unused). With one worker the trial is one process, as always; these two then replace `resources`' own.
    workers: int = 1
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    # several training runs of the exported variant, one per seed (its loop.seed), each exported as
    # checkpoints/<stage>/seed<k>.pt so that what follows can be stated across seeds; empty: one run
    seeds: list[int] = field(default_factory=list)

    def check(self, where: str) -> None:
        if len(set(self.seeds)) != len(self.seeds) or any(isinstance(x, bool) or x < 0 for x in self.seeds):
            raise UserError(f"{where}.seeds must be distinct integers >= 0 (one training run per seed, e.g. [0, 1]), "
                            f"got {self.seeds}")
        for i, seed in enumerate(self.seeds):
            check_range(f"{where}.seeds[{i}]", seed, 0, MAX_SEED)
        if self.seeds and len(self.variants) > 1:
            raise UserError(f"{where}: seeds train one variant; give one variant, or none")
        check_range(f"{where}.resources.cpu", self.resources.cpu, 0, MAX_CPUS)
        check_range(f"{where}.resources.gpu", self.resources.gpu, 0, MAX_GPUS)
        check_range(f"{where}.max_failures", self.max_failures, 0, MAX_FAILURES)
        if self.workers < 1:
            raise UserError(f"{where}.workers must be at least 1, got {self.workers}")
        check_range(f"{where}.workers", self.workers, 1, MAX_WORKERS)
        if self.cpus_per_worker is not None:
            check_range(f"{where}.cpus_per_worker", self.cpus_per_worker, 0, MAX_CPUS)
        if self.gpus_per_worker is not None:
            check_range(f"{where}.gpus_per_worker", self.gpus_per_worker, 0, MAX_GPUS)

    def trial_resources(self) -> dict[str, float]:
        """What one worker (with one, the whole trial) takes, in Ray's names."""
        if self.workers > 1:
            return {"CPU": 1 if self.cpus_per_worker is None else self.cpus_per_worker,
                    "GPU": self.gpus_per_worker or 0}
        return {"CPU": self.resources.cpu if self.cpus_per_worker is None else self.cpus_per_worker,
                "GPU": self.resources.gpu if self.gpus_per_worker is None else self.gpus_per_worker}


@dataclass
class ProtocolParams:
    colour: Literal["rgb", "y"] = "rgb"
    crop_border: int = 0
    geometry: Literal["resize", "center_crop"] = "resize"
    convention: Literal["basicsr", "official"] = "basicsr"  # restorevar.metrics.protocol


@dataclass
class CostParams:
    batch_size: int = 1
    warmup: int = 2
    repeats: int = 5


@dataclass
class EvalParams:
    protocol: ProtocolParams = field(default_factory=ProtocolParams)
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lowfreq_psnr", "lpips", "musiq", "clipiqa"])
    baselines: list[str] = field(default_factory=lambda: ["identity", "copy_input", "vqvae_roundtrip"])
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
        check_range(f"{where}.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_range(f"{where}.max_images_per_degradation", self.max_images_per_degradation, 0, MAX_IMAGES)
        check_range(f"{where}.samples_per_degradation", self.samples_per_degradation, 0, MAX_IMAGES)
        check_range(f"{where}.cost.batch_size", self.cost.batch_size, 1, MAX_BATCH_SIZE)
        check_range(f"{where}.cost.warmup", self.cost.warmup, 0, MAX_REPEATS)
        check_range(f"{where}.cost.repeats", self.cost.repeats, 1, MAX_REPEATS)
        from restorevar.inference.engine import DTYPES

        if self.dtype not in DTYPES:
            raise UserError(f"{where}.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_range(f"{where}.protocol.crop_border", self.protocol.crop_border, 0, MAX_PIXELS)


@dataclass
class StatsParams:
    method: str = "restorevar"
    against: list[str] = field(default_factory=lambda: ["identity", "copy_input", "vqvae_roundtrip"])
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lowfreq_psnr", "lpips"])
    confidence: float = 0.95
    n_boot: int = 2000
    n_perm: int = 10000
    seed: int = 0

    def check(self, where: str) -> None:
        if not 0 < self.confidence < 1:
            raise UserError(f"{where}.confidence must lie in (0, 1), got {self.confidence}")
        check_range(f"{where}.n_boot", self.n_boot, 100, MAX_IMAGES)
        check_range(f"{where}.n_perm", self.n_perm, 100, MAX_IMAGES)
        check_range(f"{where}.seed", self.seed, 0, MAX_SEED)


@dataclass
class BenchParams:
    """`restorevar bench` on the trained model (stage `bench`); see restorevar/inference/bench.py."""

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
        from restorevar.inference.engine import DTYPES

        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad:
            raise UserError(f"{where}.dtypes: unknown dtype {bad[0]!r}; use one of: {', '.join(DTYPES)}")
        if not self.batch_sizes:
            raise UserError(f"{where}.batch_sizes must be a non-empty list of sizes >= 1")
        for i, size in enumerate(self.batch_sizes):
            check_range(f"{where}.batch_sizes[{i}]", size, 1, MAX_BATCH_SIZE)
        check_range(f"{where}.warmup", self.warmup, 0, MAX_REPEATS)
        check_range(f"{where}.repeats", self.repeats, 1, MAX_REPEATS)
        check_range(f"{where}.agreement_images", self.agreement_images, 1, MAX_IMAGES)
        check_range(f"{where}.train_batch_size", self.train_batch_size, 1, MAX_BATCH_SIZE)
        check_range(f"{where}.train_steps", self.train_steps, 1, MAX_REPEATS)
        check_range(f"{where}.seed", self.seed, 0, 2**64 - 1)  # what `restorevar bench --seed` takes


@dataclass
class ReportParams:
    grid_images_per_degradation: int = 2
    title: str = "RestoreVAR suite report"

    def check(self, where: str) -> None:
        check_range(f"{where}.grid_images_per_degradation", self.grid_images_per_degradation, 0, MAX_REPEATS)


@dataclass
class AblationVariant:
    set: dict[str, Any] = field(default_factory=dict)  # merged into the stage's config (nested, as it is written)
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
    set: dict[str, Any] = field(default_factory=dict)  # merged into every variant's config, before its own
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
    # every variant trains once per seed (loop.seed: initialisation, data order, degradation sampling), so a
    # verdict can rest on the spread between training runs and not only on the test images
    seeds: list[int] = field(default_factory=lambda: [0])
    scale_space: ScaleSpaceParams = field(default_factory=ScaleSpaceParams)

    def check_families(self, where: str, names: list[str]) -> None:
        if sorted(self.families) != sorted(names):
            raise UserError(f"{where}.families must define exactly the families in ablation_families "
                            f"({', '.join(names)}); has {', '.join(self.families) or 'none'}")

    def check(self, where: str) -> None:
        from restorevar.metrics import KNOWN

        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(
                isinstance(x, bool) or x < 0 for x in self.seeds):
            raise UserError(f"{where}.seeds must be a non-empty list of distinct integers >= 0 (one training run "
                            f"per seed, e.g. [0, 1]), got {self.seeds}")
        for i, seed in enumerate(self.seeds):  # each becomes a loop.seed
            check_range(f"{where}.seeds[{i}]", seed, 0, MAX_SEED)
        sp = self.scale_space
        check_range(f"{where}.scale_space.split", sp.split, 1, MAX_REPEATS)
        check_range(f"{where}.scale_space.images_per_degradation", sp.images_per_degradation, 1, MAX_IMAGES)
        check_range(f"{where}.scale_space.grid_images", sp.grid_images, 0, MAX_IMAGES)
        for name, fam in self.families.items():
            if fam.paper_choice not in fam.variants:
                raise UserError(f"{where}.families.{name}.paper_choice {fam.paper_choice!r} is not one of its "
                                f"variants: {', '.join(fam.variants)}")
            check_range(f"{where}.families.{name}.pretrain.fraction", fam.pretrain.fraction, 0, 1, high_open=True)
            if fam.pretrain.fraction and fam.stage != "train_transformer":
                raise UserError(f"{where}.families.{name}.pretrain: only train_transformer families can pre-train "
                                f"at another size, not {fam.stage}")
            for vname, v in fam.variants.items():
                bad = [n for n in v.needs if n not in KNOWN]
                if bad:
                    raise UserError(f"{where}.families.{name}.variants.{vname}.needs: unknown {bad[0]!r}")


@dataclass
class TrackingParams:
    mlflow_uri: str = ""  # empty: sqlite:///<project>/mlflow.db
    ray_address: str = ""  # empty: RAY_ADDRESS, else a local Ray on this machine
    ray_storage: str = "ray_results"  # Tune's own experiment state (resume)
    log_checkpoints: bool = False  # also copy every trial's checkpoint into MLflow's artifacts (path+digest always)


@dataclass
class StageParams:
    name: str
    profile: str
    config: Any  # the typed trainer config
    config_dict: dict[str, Any]
    tune: TuneParams
    variants: dict[str, dict[str, Any]]  # name -> full config dict
