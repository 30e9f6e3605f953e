"""params.yaml: profiles, typed stage configs, and validation before any work starts.

Layout: ``profile`` picks a column; every section (``model``, ``data``, one per training stage, ...) holds
one entry per profile. A stage reads only its own profile's entries of the sections it uses; each is parsed
and checked when first read, and ``Params.reads`` records it (``evaluate.default``). dvc.yaml lists exactly
those entries as the stage's params (``evaluate.${profile}``), so editing another profile's column, or a
section a stage never reads, re-runs nothing. ``check_all`` (``python -m pipelines.validate``) parses every
section of every profile and checks the settings that span sections before any work starts.

The library modules behind a section are imported only when it is read, so that a stage's code
dependencies (written by ``python -m tools.dvc_deps``) are those of the sections it uses.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from restorevar.config import check_range, from_dict
from restorevar.errors import UserError
from restorevar.fileio import read_regular_text

if TYPE_CHECKING:
    from restorevar.models.presets import ModelRef

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

# the pretraining tier (pretrain/dvc.yaml, `make pretrain`): the weights the study's training starts from
PRETRAIN_STAGES = ("pretrain_tokenizer", "pretrain_prior", "pretrain_restoration")
TRAIN_STAGES = ("train_tokenizer", "finetune_decoder", "train_transformer", "train_refiner")
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


def train_config_class(stage: str) -> type:
    """The typed trainer config of a training stage (imported here, not at the top: see the docstring)."""
    from restorevar.train.decoder import DecoderTrainConfig
    from restorevar.train.prior import PriorTrainConfig
    from restorevar.train.refiner import RefinerTrainConfig
    from restorevar.train.tokenizer import TokenizerTrainConfig
    from restorevar.train.transformer import TransformerTrainConfig

    return {"pretrain_tokenizer": TokenizerTrainConfig, "pretrain_prior": PriorTrainConfig,
            "pretrain_restoration": TransformerTrainConfig,
            "train_tokenizer": TokenizerTrainConfig, "finetune_decoder": DecoderTrainConfig,
            "train_transformer": TransformerTrainConfig, "train_refiner": RefinerTrainConfig}[stage]


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
    # name -> {dotted.key: value} applied to the stage config; each becomes a trial
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

    def check(self, where: str) -> None:
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
    set: dict[str, Any] = field(default_factory=dict)  # dotted keys on every variant's config, before its own
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


MODEL_METHOD = "restorevar"
BASELINES = ("identity", "copy_input", "vqvae_roundtrip")


class _Refused(yaml.MarkedYAMLError):
    """What ``StrictLoader`` refuses; ``load_raw`` words it as one line with the file and the line."""


def _node_paths(root: yaml.Node) -> dict[int, str]:
    """The dotted key of every node of a document (``train_tokenizer.default.loop.steps``), for messages; an
    alias keeps its anchor's. Walked without recursion: the composer has already accepted the nesting."""
    paths: dict[int, str] = {}
    stack: list[tuple[str, yaml.Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            children = [(f"{path}.{k.value}" if path else str(k.value), v) if isinstance(k, yaml.ScalarNode)
                        else (path, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node.value)]
        else:
            continue
        stack.extend(reversed(children))  # in the document's order, so that an anchor is named before its aliases
    return paths


def _abbreviated(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:16]}...{text[-8:]} ({len(text)} characters)"


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader for files people write by hand (params.yaml). It refuses what the plain one lets pass
    silently or turns into a traceback: a key given twice in one mapping (the last would win, so an edit of the
    first would change nothing), a key that is not text (``1:``, ``null:``), an integer beyond any number
    setting (past 4300 digits Python cannot even read it), and a scalar its type cannot hold (the date
    2024-13-01). Merge keys (``<<: *base``) may still be overridden: only the keys written in a mapping itself
    are compared."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._paths: dict[int, str] = {}
        self._checked: set[int] = set()

    def _where(self, node: yaml.Node) -> str:
        path = self._paths.get(id(node), "")
        return f"{path}: " if path else ""

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = _node_paths(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:  # a scalar its tag's type cannot hold
            raise _Refused(problem=f"{self._where(node)}cannot read {_abbreviated(str(node.value))!r} ({e}); "
                                   "quote it if it is text", problem_mark=node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts
            value = None
        if value is None or abs(value) > sys.float_info.max:
            raise _Refused(problem=f"{self._where(node)}the integer {_abbreviated(node.value)} is larger than any "
                                   "setting takes; check it for a typo", problem_mark=node.start_mark)
        return value

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # checked before flattening, which puts the merged keys in front of the mapping's own (once per mapping)
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if not isinstance(key, str):  # from_dict and every message take keys for names
                    kind = ("null" if key is None else "true/false" if isinstance(key, bool) else
                            "a number" if isinstance(key, (int, float)) else f"a {type(key).__name__}")
                    text = _abbreviated(key_node.value)
                    raise _Refused(problem=f"{self._where(node)}the key {text} reads as {kind}, not as a name; "
                                           f"quote it ('{text}')", problem_mark=key_node.start_mark)
                if key in first:
                    path = self._paths.get(id(node), "")
                    raise _Refused(problem=f"duplicate key {f'{path}.{key}' if path else key} (first at line "
                                           f"{first[key].start_mark.line + 1}); YAML would keep only the last one, "
                                           "silently: delete one of them", problem_mark=key_node.start_mark)
                first[key] = key_node
        super().flatten_mapping(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def load_raw(path: Path = PARAMS) -> dict[str, Any]:
    if not os.path.lexists(path):
        raise UserError(f"params file not found: {path}")
    text = read_regular_text(path, "params file")  # a folder, FIFO or non-UTF-8 file is a UserError naming it
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except _Refused as e:
        raise UserError(f"{path}, line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.reader.ReaderError as e:  # a control character: the reader knows its offset, not its line
        line = text.count("\n", 0, e.position) + 1
        raise UserError(f"{path} is not valid YAML at line {line}: {str(e).splitlines()[0]}") from None
    except yaml.YAMLError as e:  # one line: the problem and where, not the parser's multi-line report
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path} is not valid YAML{at}: {problem}") from None
    except RecursionError:  # the composer recurses once per level of nesting
        raise UserError(f"{path} nests its lists or mappings too deeply to read; params.yaml needs a few "
                        "levels") from None
    if not isinstance(data, dict) or "profile" not in data:
        raise UserError(f"{path} must be a mapping with a 'profile' key")
    return data


def _is_setting(cls: type, dotted: str) -> bool:
    """Whether ``dotted`` (``loop.steps``) names a setting of the config dataclass ``cls``."""
    tp: Any = cls
    for part in dotted.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return False
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return False
        tp = hints[part]
    return True


def _located(e: UserError, where: str, cls: type | None = None) -> UserError:
    """``e`` with its place in params.yaml (``train_transformer.default``) in front, unless it names it already:
    a config's ``validate()`` serves command lines and checkpoints too, so it names its settings relative to the
    config (``loop.steps``), and that alone does not say which stage and profile hold the bad value."""
    msg = str(e)
    if msg.startswith((f"{where}.", f"{where}:", f"{where} ", f"unknown config key(s) {where}.")):
        return e
    head = re.match(r"[A-Za-z_][\w.]*", msg)
    if cls is not None and head and _is_setting(cls, head.group().rstrip(".")):
        return UserError(f"{where}.{msg}")
    return UserError(f"{where}: {msg}")


def _typed(cls: type[T], data: dict[str, Any], where: str) -> T:
    """``from_dict`` of one entry of params.yaml, every message naming the stage, profile and key."""
    try:
        return from_dict(cls, data, where=where)
    except UserError as e:
        raise _located(e, where, cls) from None


def _section(raw: dict[str, Any], name: str, profile: str) -> dict[str, Any]:
    if name not in raw:
        raise UserError(f"params.yaml: missing section '{name}'")
    sec = raw[name]
    if sec is None:
        raise UserError(f"params.yaml: section '{name}' is empty (null); give it one entry per profile")
    if not isinstance(sec, dict):
        raise UserError(f"params.yaml: section '{name}' must map each profile to its settings, "
                        f"got {type(sec).__name__}")
    if profile not in sec:
        raise UserError(f"params.yaml: section '{name}' has no entry for profile '{profile}' "
                        f"(has: {', '.join(sec)})")
    entry = sec[profile]
    if entry is None:  # `default:` with nothing after it; {} is how to ask for the defaults
        raise UserError(f"params.yaml: {name}.{profile} is empty (null); write {{}} for the defaults")
    if not isinstance(entry, dict):
        raise UserError(f"params.yaml: {name}.{profile} must be a mapping of settings, got {type(entry).__name__}")
    return copy.deepcopy(entry)


def _set_dotted(d: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``d[a][b] = value`` for ``key`` 'a.b'. ``model.overrides`` is added to, not replaced: a variant's
    overrides (``transformer.positions=ape``) apply on top of the profile's own (its image size, say).
    ``where`` (the variant) is named when ``key`` reaches inside a setting rather than a section."""
    if key == "model.overrides" and isinstance(value, list):
        value = list(d.get("model", {}).get("overrides", [])) + [v for v in value
                                                                   if v not in d.get("model", {}).get("overrides", [])]
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise UserError(f"{where}: {key!r} reaches inside {'.'.join(parts[:i + 1])}, which is a setting, not a "
                            "section; give the setting's own dotted key")
    d[parts[-1]] = value


@dataclass
class StageParams:
    name: str
    profile: str
    config: Any  # the typed trainer config
    config_dict: dict[str, Any]
    tune: TuneParams
    variants: dict[str, dict[str, Any]]  # name -> full config dict


class _Table(Mapping):
    """Entries built (once) when first looked up, so that looking one up reads only the params behind it."""

    def __init__(self, names: Callable[[], Iterable[str]], build: Callable[[str], Any]):
        self._names, self._build, self._built = names, build, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in list(self._names()):
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __contains__(self, name: object) -> bool:  # without building the entry
        return name in list(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names()))

    def __len__(self) -> int:
        return len(list(self._names()))


class Params:
    """One profile's view of params.yaml. Sections are parsed and checked when first read, and every
    read is recorded in ``reads`` as its dvc.yaml params key (``profile``, ``evaluate.default``, ...)."""

    def __init__(self, path: Path = PARAMS, profile: str | None = None):
        self.path = path
        self.raw = load_raw(path)
        self.reads: set[str] = set()
        if profile is None:
            self.reads.add("profile")
            profile = self.raw["profile"]
        if not isinstance(profile, str) or not profile:
            raise UserError(f"params.yaml: profile must be the name of a profile, got {profile!r}")
        self.profile = profile

    def _entry(self, name: str) -> dict[str, Any]:
        """This profile's entry of section ``name`` (a copy to change freely), recorded as read."""
        self.reads.add(f"{name}.{self.profile}")
        return _section(self.raw, name, self.profile)

    def _where(self, name: str) -> str:
        return f"{name}.{self.profile}"

    @cached_property
    def model(self) -> ModelRef:
        from restorevar.models.presets import ModelRef

        m = _typed(ModelRef, self._entry("model"), self._where("model"))
        try:
            m.build_config()  # a bad preset or override fails here, before any work
        except UserError as e:
            raise _located(e, self._where("model")) from None
        return m

    @cached_property
    def data(self) -> DataParams:
        d = _typed(DataParams, self._entry("data"), self._where("data"))
        d.check(self._where("data"))
        return d

    @cached_property
    def evaluate(self) -> EvalParams:
        e = _typed(EvalParams, self._entry("evaluate"), self._where("evaluate"))
        e.check(self._where("evaluate"))
        return e

    @cached_property
    def stats(self) -> StatsParams:
        s = _typed(StatsParams, self._entry("stats"), self._where("stats"))
        s.check(self._where("stats"))
        return s

    @cached_property
    def bench(self) -> BenchParams:
        b = _typed(BenchParams, self._entry("bench"), self._where("bench"))
        b.check(self._where("bench"))
        return b

    @cached_property
    def report(self) -> ReportParams:
        r = _typed(ReportParams, self._entry("report"), self._where("report"))
        r.check(self._where("report"))
        return r

    @cached_property
    def ablations(self) -> AblationParams:
        a = _typed(AblationParams, self._entry("ablations"), self._where("ablations"))
        a.check(self._where("ablations"))
        return a

    @cached_property
    def stages(self) -> Mapping[str, StageParams]:
        return _Table(lambda: (*PRETRAIN_STAGES, *TRAIN_STAGES), self._stage)

    @cached_property
    def ablation_variants(self) -> Mapping[str, dict[str, dict[str, Any]]]:
        """Family -> variant -> the variant's full stage config; keyed by this profile's ablation families."""
        return _Table(lambda: self.ablations.families, self._ablation_variants)

    @cached_property
    def ablation_pretrain(self) -> Mapping[str, dict[str, dict[str, Any]] | None]:
        return _Table(lambda: self.ablations.families, self._ablation_pretrain)

    @cached_property
    def ablation_families(self) -> list[str]:
        self.reads.add("ablation_families")
        if "ablation_families" not in self.raw:
            raise UserError("params.yaml: missing 'ablation_families', the list of ablation families")
        names = self.raw["ablation_families"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"params.yaml: ablation_families must be a list of family names ([] for none), "
                            f"got {names!r}")
        return names

    @cached_property
    def tracking(self) -> TrackingParams:
        self.reads.add("tracking")
        raw = self.raw.get("tracking", {})
        if not isinstance(raw, dict):
            raise UserError(f"params.yaml: section 'tracking' must be a mapping of settings, got {raw!r}; "
                            "remove it for the defaults")
        return _typed(TrackingParams, raw, "tracking")

    @property
    def mlflow_uri(self) -> str:
        return self.tracking.mlflow_uri or f"sqlite:///{ROOT / 'mlflow.db'}"

    @property
    def ray_address(self) -> str | None:
        return self.tracking.ray_address or None

    @property
    def ray_storage(self) -> str:
        return str((ROOT / (self.tracking.ray_storage or "ray_results")).resolve())

    def check_profile(self) -> Params:
        """Parse every section of this profile and check what spans sections; raises UserError naming the key."""
        profiles = self.raw.get("profiles")
        if not isinstance(profiles, list) or not profiles or not all(isinstance(q, str) for q in profiles):
            raise UserError(f"params.yaml: profiles must be the list of profile names, got {profiles!r}")
        if self.profile not in profiles:
            raise UserError(f"params.yaml: profile '{self.profile}' is not one of: {', '.join(profiles)}")
        unknown = [k for k in self.raw if k not in SECTIONS]
        if unknown:
            raise UserError(f"params.yaml: unknown section '{unknown[0]}'; the sections are: {', '.join(SECTIONS)}")
        _ = self.model, self.data, self.evaluate, self.stats, self.bench, self.report, self.tracking  # read: checked
        dict(self.stages)  # every training stage with every variant
        self.ablations.check_families(self._where("ablations"), self.ablation_families)
        for family in self.ablation_families:
            self.ablation_variants[family]  # looking an entry up builds and checks it
            self.ablation_pretrain[family]
        self._check_sizes()
        self._check_pretrained()
        return self

    def _check_pretrained(self) -> None:
        """A stage that starts from the shipped weights (``init_from: pretrained``) fails here, before any work,
        when they are missing or do not match their card."""
        from restorevar.pretrained import pretrained_path

        part = {("train_tokenizer", "pretrained"): "tokenizer", ("train_transformer", "pretrained"): "prior",
                ("train_transformer", "pretrained_restoration"): "restoration"}
        for (stage, init), name in part.items():
            if any(c.get("init_from") == init for c in self.stages[stage].variants.values()):
                pretrained_path(self.model.preset, name)

    def preflight(self) -> list[str]:
        """What this profile needs that is not here yet, one line each with the command that gets it: the
        published weights its stages start from or require, and its datasets or manifests. Only presence and
        size are checked here; every file is hashed in full before it is loaded."""
        from restorevar.data import weights

        needs: dict[str, str] = {}
        init_weights = {"train_tokenizer": {"var": "var_vae"}, "train_transformer": {"var_d16": "var_d16"}}
        for stage, by_init in init_weights.items():
            for c in self.stages[stage].variants.values():
                if c.get("init_from") in by_init:
                    needs[by_init[c["init_from"]]] = f"{self._where(stage)}.init_from {c['init_from']}"
        if any(c.get("perceptual_required") for c in self.stages["finetune_decoder"].variants.values()):
            for spec in weights.WEIGHTS:
                if "lpips" in spec.needed_by:
                    needs[spec.name] = f"{self._where('finetune_decoder')}.perceptual_required"
        cache = weights.default_cache()
        out = []
        for name, why in needs.items():
            spec = weights.BY_NAME[name]
            path = cache / spec.relpath
            if not path.is_file() or (spec.size is not None and path.stat().st_size != spec.size):
                state = "missing" if not path.is_file() else f"{path.stat().st_size} bytes, not {spec.size}"
                out.append(f"weights {spec.relpath} ({state} under {cache}; for {why}): "
                           f"restorevar data fetch-weights --cache {cache}")
        d = self.data
        if d.source == "datasets":
            for name in d.datasets:
                folder = ROOT / d.root / name
                if not folder.is_dir() or not any(folder.iterdir()):
                    out.append(f"dataset {name} (no files in {folder}): restorevar data fetch {name} --root {d.root}")
        elif d.source == "manifests":
            for name in (*d.train_manifests, *d.test_manifests):
                if not (ROOT / d.root / name).is_file():  # relative to root, as the data stage reads them
                    out.append(f"manifest {name} (not found; {self._where('data')}): copy it from the official "
                               "code's release (its trainset.json and test_jsons/) or fix the path")
            if not (ROOT / d.root).is_dir():
                out.append(f"image root {d.root} (not a folder; {self._where('data')}.root): the folder the "
                           "manifests' paths start from")
        return out

    def _check_sizes(self) -> None:
        """The synthetic images are ``data.size`` px square: every training crop must fit in them, and so must
        the model's size where the test protocol crops rather than resizes."""
        d = self.data
        if d.source != "synth":
            return  # real photographs: their sizes are known only once fetched
        where_size = f"{self._where('data')}.size"
        runs = [(f"{self._where(s)}.tune.variants.{v}" if len(self.stages[s].variants) > 1 else self._where(s), s, c)
                for s in (*PRETRAIN_STAGES, *TRAIN_STAGES) for v, c in self.stages[s].variants.items()]
        for family in self.ablation_families:
            stage = self.ablations.families[family].stage
            runs += [(f"{self._where('ablations')}.families.{family}.variants.{v}", stage, c)
                     for v, c in self.ablation_variants[family].items()]
            runs += [(f"{self._where('ablations')}.families.{family}.pretrain ({v})", stage, c)
                     for v, c in (self.ablation_pretrain[family] or {}).items()]
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
        image_size = self.model.build_config().vqvae.image_size
        if self.evaluate.protocol.geometry == "center_crop" and d.size < image_size:
            raise UserError(f"{self._where('evaluate')}.protocol.geometry center_crop needs test images of at "
                            f"least the model's {image_size} px, but {where_size} is {d.size}; raise it or use resize")

    def _stage(self, name: str) -> StageParams:
        cls = train_config_class(name)
        sec = self._entry(name)
        where = self._where(name)
        tune = sec.pop("tune", {})
        if not isinstance(tune, dict):
            raise UserError(f"{where}.tune: expected a mapping, got {tune!r}; remove it for the defaults")
        tune = _typed(TuneParams, tune, f"{where}.tune")
        tune.check(f"{where}.tune")
        sec["model"] = {"preset": self.model.preset, "overrides": list(self.model.overrides)}
        sec.setdefault("data", {})["train_manifest"] = self.train_manifest
        for key, stage in UPSTREAM.get(name, {}).items():
            sec[key] = str(checkpoint_path(stage))
        cfg = _typed(cls, sec, where)
        variants = {}
        for vname, changes in (tune.variants or {"main": {}}).items():
            d = copy.deepcopy(sec)
            for k, v in (changes or {}).items():
                _set_dotted(d, k, v, f"{where}.tune.variants.{vname}")
            batch = _typed(cls, d, f"{where}.tune.variants.{vname}").loop.batch_size  # validates it too
            if batch % tune.workers:
                raise UserError(f"{where}.tune.workers={tune.workers} must divide the batch size {batch} of variant "
                                f"{vname} (every worker takes an equal share of each batch)")
            variants[vname] = d
        if tune.chosen and tune.chosen not in variants:
            raise UserError(f"{where}.tune.chosen '{tune.chosen}' is not one of the variants: {', '.join(variants)}")
        if len(variants) > 1 and not tune.metric and not tune.chosen:
            raise UserError(f"{where}.tune: several variants need a metric or a chosen variant to export")
        return StageParams(name, self.profile, cfg, sec, tune, variants)

    def _ablation_variants(self, family: str) -> dict[str, dict[str, Any]]:
        """Each variant's full, validated stage config: the stage's own, the family's reduced loop, its changes."""
        fam = self.ablations.families[family]
        cls = train_config_class(fam.stage)
        family_where = f"ablations.{self.profile}.families.{family}"

        def config(*changes: dict[str, Any], where: str) -> dict[str, Any]:
            """The stage's config with each mapping of ``changes`` set in turn (so model overrides add up: the
            profile's, the family's, the variant's)."""
            d = copy.deepcopy(self.stages[fam.stage].config_dict)
            d["loop"] = {**d.get("loop", {}), **fam.loop}
            for change in changes:
                for k, val in change.items():
                    _set_dotted(d, k, copy.deepcopy(val), where)
            _typed(cls, d, where)
            return d

        out = {}
        for vname, v in fam.variants.items():
            try:
                out[vname] = config(fam.set, v.set, where=f"{family_where}.variants.{vname}")
            except UserError:
                config(fam.set, where=family_where)  # a fault of the family's own loop or set is named at the family
                raise
        inits = {d.get("init_from", "") for d in out.values()}
        if len(inits) > 1:  # otherwise the family compares starting points, not the variants
            raise UserError(f"ablations.{self.profile}.families.{family}: every variant must start from the same "
                            f"weights, but init_from is {' / '.join(sorted(map(repr, inits)))}; set one init_from "
                            "in the family's `set`")
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
            if d["data"].get("resize_shorter"):  # the same framing of the photographs, at the smaller size
                d["data"]["resize_shorter"] = round(d["data"]["resize_shorter"] * pre.fraction)
            d["loop"] = {**d["loop"], **pre.loop}
            d["any_resolution"] = True
            cfg = _typed(train_config_class(fam.stage), d, where)  # its loop and sizes: the pretraining's own
            try:
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


def check_all(path: Path = PARAMS) -> list[Params]:
    """Every profile of the file checked (``pipelines.validate``): a typo in any column fails, naming it.
    The chosen profile comes first."""
    chosen = Params(path).check_profile()
    return [chosen] + [Params(path, profile=q).check_profile() for q in chosen.raw["profiles"] if q != chosen.profile]
