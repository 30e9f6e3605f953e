"""params.yaml: profiles, typed stage configs, and validation before any work starts.

Layout: ``profile`` picks a column; every section (``model``, ``data``, one per training stage, ...) holds
one entry per profile. A stage reads only its own profile's entries of the sections it uses; each is parsed
and checked when first read, and ``Params.reads`` records it (``evaluate.default``). dvc.yaml lists exactly
those entries as the stage's params (``evaluate.${profile}``), so editing another profile's column, or a
section a stage never reads, re-runs nothing. ``pipelines.preflight.check_all`` (``python -m pipelines.validate``) parses
every section of every profile and checks the settings that span sections before any work starts; the file's
strict loading is ``pipelines.params_yaml``, its sections' types ``pipelines.params_schema``.

The library modules behind a section are imported only when it is read, so that a stage's code
dependencies (written by ``python -m tools.dvc_deps``) are those of the sections it uses.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import params_schema as schema
from pipelines.params_schema import PRETRAIN_STAGES, TRAIN_STAGES, UPSTREAM
from pipelines.params_yaml import (
    PARAMS,
    ROOT,
    load_raw,
    located,
    merge,
    override_strings,
    profile_entry,
    typed,
    with_override_strings,
)
from restorevar.errors import UserError

if TYPE_CHECKING:
    from restorevar.models.presets import ModelRef


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
        # stage and ablation-variant configs with their model overrides still a mapping, which later changes merge
        # into; the configs handed out hold them as strings
        self._trees: dict[str, dict[str, Any]] = {}
        self._ablation_trees: dict[str, dict[str, dict[str, Any]]] = {}
        if profile is None:
            self.reads.add("profile")
            profile = self.raw["profile"]
        if not isinstance(profile, str) or not profile:
            raise UserError(f"params.yaml: profile must be the name of a profile, got {profile!r}")
        self.profile = profile

    def _entry(self, name: str) -> dict[str, Any]:
        """This profile's entry of section ``name`` (a copy to change freely), recorded as read."""
        self.reads.add(f"{name}.{self.profile}")
        return profile_entry(self.raw, name, self.profile)

    def where(self, name: str) -> str:
        return f"{name}.{self.profile}"

    @cached_property
    def _model_entry(self) -> dict[str, Any]:
        """The model entry as written: its overrides a nested mapping, which stage configs merge into."""
        return self._entry("model")

    @cached_property
    def model(self) -> ModelRef:
        from restorevar.models.presets import ModelRef

        m = typed(ModelRef, {**self._model_entry, "overrides": override_strings(
            self._model_entry.get("overrides", {}), f"{self.where('model')}.overrides")}, self.where("model"))
        try:
            m.build_config()  # a bad preset or override fails here, before any work
        except UserError as e:
            raise located(e, self.where("model")) from None
        return m

    @cached_property
    def data(self) -> schema.DataParams:
        d = typed(schema.DataParams, self._entry("data"), self.where("data"))
        d.check(self.where("data"))
        return d

    @cached_property
    def evaluate(self) -> schema.EvalParams:
        e = typed(schema.EvalParams, self._entry("evaluate"), self.where("evaluate"))
        e.check(self.where("evaluate"))
        return e

    @cached_property
    def stats(self) -> schema.StatsParams:
        s = typed(schema.StatsParams, self._entry("stats"), self.where("stats"))
        s.check(self.where("stats"))
        return s

    @cached_property
    def bench(self) -> schema.BenchParams:
        b = typed(schema.BenchParams, self._entry("bench"), self.where("bench"))
        b.check(self.where("bench"))
        return b

    @cached_property
    def report(self) -> schema.ReportParams:
        r = typed(schema.ReportParams, self._entry("report"), self.where("report"))
        r.check(self.where("report"))
        return r

    @cached_property
    def ablations(self) -> schema.AblationParams:
        a = typed(schema.AblationParams, self._entry("ablations"), self.where("ablations"))
        a.check(self.where("ablations"))
        return a

    @cached_property
    def stages(self) -> Mapping[str, schema.StageParams]:
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
    def tracking(self) -> schema.TrackingParams:
        self.reads.add("tracking")
        raw = self.raw.get("tracking", {})
        if not isinstance(raw, dict):
            raise UserError(f"params.yaml: section 'tracking' must be a mapping of settings, got {raw!r}; "
                            "remove it for the defaults")
        return typed(schema.TrackingParams, raw, "tracking")

    @property
    def mlflow_uri(self) -> str:
        return self.tracking.mlflow_uri or f"sqlite:///{ROOT / 'mlflow.db'}"

    @property
    def ray_address(self) -> str | None:
        return self.tracking.ray_address or None

    @property
    def ray_storage(self) -> str:
        return str((ROOT / (self.tracking.ray_storage or "ray_results")).resolve())
    def _stage(self, name: str) -> schema.StageParams:
        cls = schema.train_config_class(name)
        sec = self._entry(name)
        where = self.where(name)
        tune = sec.pop("tune", {})
        if not isinstance(tune, dict):
            raise UserError(f"{where}.tune: expected a mapping, got {tune!r}; remove it for the defaults")
        tune = typed(schema.TuneParams, tune, f"{where}.tune")
        tune.check(f"{where}.tune")
        if name in schema.BASELINE_STAGES:  # its own model, named in its own entry
            own = sec.get("model", {})
            if not isinstance(own, dict):
                raise UserError(f"{where}.model: expected a mapping {{preset: ..., overrides: {{...}}}}, got {own!r}")
            sec["model"] = {**own, "overrides": copy.deepcopy(own.get("overrides", {}))}
        else:
            if "model" in sec:
                raise UserError(f"{where}.model: this stage trains the `model` section's RestoreVAR; set it there")
            sec["model"] = {"preset": self.model.preset,
                            "overrides": copy.deepcopy(self._model_entry.get("overrides", {}))}
        sec.setdefault("data", {})["train_manifest"] = self.train_manifest
        for key, stage in UPSTREAM.get(name, {}).items():
            sec[key] = str(checkpoint_path(stage))
        self._trees[name] = copy.deepcopy(sec)
        sec = with_override_strings(sec, where)
        cfg = typed(cls, sec, where)
        variants = {}
        for vname, changes in (tune.variants or {"main": {}}).items():
            d = copy.deepcopy(self._trees[name])
            merge(d, changes or {}, f"{where}.tune.variants.{vname}")
            d = with_override_strings(d, f"{where}.tune.variants.{vname}")
            batch = typed(cls, d, f"{where}.tune.variants.{vname}").loop.batch_size  # validates it too
            if batch % tune.workers:
                raise UserError(f"{where}.tune.workers={tune.workers} must divide the batch size {batch} of variant "
                                f"{vname} (every worker takes an equal share of each batch)")
            variants[vname] = d
        if tune.chosen and tune.chosen not in variants:
            raise UserError(f"{where}.tune.chosen '{tune.chosen}' is not one of the variants: {', '.join(variants)}")
        if len(variants) > 1 and not tune.metric and not tune.chosen:
            raise UserError(f"{where}.tune: several variants need a metric or a chosen variant to export")
        return schema.StageParams(name, self.profile, cfg, sec, tune, variants)

    def _ablation_variants(self, family: str) -> dict[str, dict[str, Any]]:
        """Each variant's full, validated stage config: the stage's own, the family's reduced loop, its changes."""
        fam = self.ablations.families[family]
        cls = schema.train_config_class(fam.stage)
        family_where = f"ablations.{self.profile}.families.{family}"

        def config(*changes: dict[str, Any], where: str) -> dict[str, Any]:
            """The stage's config (its model overrides still a mapping) with each of ``changes`` merged in turn:
            the family's reduced loop, its ``set``, the variant's ``set``."""
            self.stages[fam.stage]
            d = copy.deepcopy(self._trees[fam.stage])
            for change in changes:
                merge(d, change, where)
            typed(cls, with_override_strings(d, where), where)
            return d

        out = {}
        for vname, v in fam.variants.items():
            try:
                out[vname] = config({"loop": fam.loop}, fam.set, v.set, where=f"{family_where}.variants.{vname}")
            except UserError:  # a fault of the family's own loop or set is named at the family
                config({"loop": fam.loop}, fam.set, where=family_where)
                raise
        inits = {d.get("init_from", "") for d in out.values()}
        if len(inits) > 1:  # otherwise the family compares starting points, not the variants
            raise UserError(f"ablations.{self.profile}.families.{family}: every variant must start from the same "
                            f"weights, but init_from is {' / '.join(sorted(map(repr, inits)))}; set one init_from "
                            "in the family's `set`")
        self._ablation_trees[family] = out
        return {vname: with_override_strings(d, f"{family_where}.variants.{vname}") for vname, d in out.items()}

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
        self.ablation_variants[family]
        for vname, d in self._ablation_trees[family].items():
            d = copy.deepcopy(d)
            merge(d, {"model": {"overrides": {"vqvae": {"image_size": size, "patch_nums": pn}}}}, where)
            d = with_override_strings(d, where)
            d["data"]["crop"] = size
            if d["data"].get("resize_shorter"):  # the same framing of the photographs, at the smaller size
                d["data"]["resize_shorter"] = round(d["data"]["resize_shorter"] * pre.fraction)
            merge(d, {"loop": pre.loop}, where)
            d["any_resolution"] = True
            cfg = typed(schema.train_config_class(fam.stage), d, where)  # its loop and sizes: the pretraining's own
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
