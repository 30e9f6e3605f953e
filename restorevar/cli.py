"""``restorevar`` command line. Bad input ends in one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from restorevar.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_meta(preset: str, overrides: list[str]):
    import torch

    from restorevar.models import RestoreVAR, get_preset

    cfg = get_preset(preset, overrides)
    with torch.device("meta"):  # shapes only: no memory, no init cost, even for the paper preset
        return RestoreVAR(cfg)


# ------------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------------
def model_info(preset: str, overrides: list[str]) -> dict[str, Any]:
    from restorevar.config import to_dict
    from restorevar.models import PatchGAN

    m = _build_meta(preset, overrides)
    v, t = m.cfg.vqvae, m.cfg.transformer
    import torch

    with torch.device("meta"):
        disc = PatchGAN(m.cfg.discriminator)
    params = {
        "vqvae": _count(m.vqvae),
        "vqvae_encoder": _count(m.vqvae.encoder) + _count(m.vqvae.quant_conv),
        "vqvae_decoder": _count(m.vqvae.decoder) + _count(m.vqvae.post_quant_conv),
        "vqvae_quantizer": _count(m.vqvae.quantizer),
        "transformer": _count(m.transformer),
        "refiner": _count(m.refiner),
        "discriminator": _count(disc),
    }
    return {
        "preset": preset,
        "overrides": overrides,
        "params": params,
        "params_M": {k: round(n / 1e6, 3) for k, n in params.items()},
        "image_size": v.image_size,
        "patch_nums": list(v.patch_nums),
        "n_scales": len(v.patch_nums),
        "n_tokens": v.n_tokens,
        "latent_size": [v.z_channels, v.latent_size, v.latent_size],
        "vocab_size": v.vocab_size,
        "positions": t.positions,
        "conditioning": t.conditioning,
        "refiner": m.cfg.refiner.kind,
        "config": to_dict(m.cfg),
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.preset, args.set)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"preset {info['preset']}: {info['image_size']} px, latent {info['latent_size']}, "
          f"{info['n_scales']} scales {info['patch_nums']} = {info['n_tokens']} tokens, V={info['vocab_size']}")
    print(f"variant: positions={info['positions']} conditioning={info['conditioning']} refiner={info['refiner']}")
    for k, n in info["params"].items():
        print(f"  {k:<16} {n / 1e6:10.3f} M")
    return 0


# ------------------------------------------------------------------------------------------------
# convert-official
# ------------------------------------------------------------------------------------------------
def _read_manifest(path: Path) -> dict[str, dict[str, list[int]]]:
    """The manifest's ``checkpoints``: name -> {key: shape}, every shape a list of non-negative integers."""
    if not path.exists():
        raise UserError(f"manifest not found: {path}; check the path")
    if not path.is_file():  # a folder, or a FIFO that would block the read
        raise UserError(f"manifest {path} is not a regular file; give the JSON file")
    not_manifest = f"{path} is not a checkpoint shape manifest (expected a 'checkpoints' mapping)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))["checkpoints"]
    except OSError as e:
        raise UserError(f"cannot read manifest {path}: {e.strerror or e}; check its permissions") from None
    except (ValueError, RecursionError, KeyError, TypeError) as e:  # bad JSON or UTF-8, huge integers, deep nesting
        raise UserError(f"{not_manifest}: {str(e)[:200]}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{not_manifest}: 'checkpoints' is a {type(manifest).__name__}")
    for name, shapes in manifest.items():
        if not isinstance(shapes, dict):
            raise UserError(f"{not_manifest}: checkpoint {name!r} maps to a {type(shapes).__name__}, "
                            "not {key: shape}")
        for key, shape in shapes.items():
            if not (isinstance(shape, list)
                    and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise UserError(f"{path}: checkpoint {name!r} key {key!r} has shape {json.dumps(shape)}; "
                                "a shape must be a list of non-negative integers; fix the manifest")
    return manifest


def check_manifest(path: Path, preset: str, overrides: list[str]) -> dict[str, Any]:
    """Convert zero tensors shaped as in the manifest and load them strictly into the preset."""
    import torch

    from restorevar.convert import MANIFEST_KINDS, convert, fill_missing, is_clean

    manifest = _read_manifest(path)
    model = _build_meta(preset, overrides)
    out: dict[str, Any] = {"preset": preset, "manifest": str(path), "checkpoints": {}, "ok": True}
    for name, shapes in manifest.items():
        kind = MANIFEST_KINDS.get(name)
        if kind is None:
            raise UserError(f"manifest lists unknown checkpoint {name!r}; known: {', '.join(MANIFEST_KINDS)}")
        zero = torch.zeros(())  # one shared zero, expanded: real zero tensors without gigabytes of memory
        sd = {k: zero.expand(s) for k, s in shapes.items()}
        rep = convert(kind, sd, model)
        summary = rep.summary()
        summary["keys_total"] = len(sd)
        if kind == "var_d16":
            summary["dropped"] = sorted(rep.ignored)
            summary["newly_initialised"] = fill_missing(rep, model)
            summary["missing"] = {}
        for comp, state in rep.components.items():
            if is_clean(rep):
                res = getattr(model, comp).load_state_dict(state, strict=True, assign=True)
                assert not res.missing_keys and not res.unexpected_keys
        summary["loaded_strictly"] = is_clean(rep)
        out["ok"] &= is_clean(rep)
        out["checkpoints"][name] = summary
    return out


def _check_convert_outputs(args: argparse.Namespace, inputs: list[tuple[str, Path]]) -> None:
    """--out is given and free, and neither it nor --report is an input (flag, path) or the other."""
    from restorevar.fileio import check_output_file

    if args.out is None:
        raise UserError("--out is required when converting files")
    check_output_file(args.out, "--out")
    for out_flag, out in (("--out", args.out), ("--report", args.report)):
        for flag, p in inputs:
            if out is not None and out.resolve() == p.resolve():
                raise UserError(f"{out_flag} {out} is the {flag} input itself; writing there would destroy "
                                f"the original; choose another {out_flag}")
    if args.report is not None and args.report.resolve() == args.out.resolve():
        raise UserError(f"--report and --out are both {args.out}; give the report its own file")


def convert_files(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from restorevar.checkpoint import read_torch_file, save_checkpoint
    from restorevar.convert import TARGETS, convert_into, unwrap_state_dict
    from restorevar.models import RestoreVAR, get_preset

    inputs = [(k, p) for k, p in (("vqvae", args.vae), ("restorevar", args.restorevar), ("var_d16", args.var)) if p]
    if args.promptir:
        if inputs:
            raise UserError("--promptir converts a model of its own; give it without --vae, --restorevar and --var")
        return convert_promptir_file(args)
    if not inputs:
        raise UserError("nothing to convert: give --vae, --restorevar and/or --var, or --check-manifest")
    if args.restorevar and args.var:
        raise UserError("--restorevar and --var both fill the transformer; give one of them")
    if not -(2**63) <= args.seed < 2**64:  # what torch.manual_seed takes
        raise UserError(f"--seed must fit in 64 bits, got {args.seed}")
    flags = {"vqvae": "--vae", "restorevar": "--restorevar", "var_d16": "--var"}
    _check_convert_outputs(args, [(flags[kind], p) for kind, p in inputs])
    cfg = get_preset(args.preset, args.set)
    loaded = [(kind, path, unwrap_state_dict(read_torch_file(path))) for kind, path in inputs]  # fail fast
    torch.manual_seed(args.seed)
    model = RestoreVAR(cfg)
    components: dict[str, dict[str, torch.Tensor]] = {}
    summary: dict[str, Any] = {"preset": args.preset, "out": str(args.out), "checkpoints": {}}
    for kind, path, sd in loaded:
        s = convert_into(kind, sd, model, lambda first, n, path=path, kind=kind: (
            f"{path} does not match the {args.preset} preset as {kind}: {first} ({n} problems in all); "
            "check --preset/--set and the file's kind"))
        for comp in TARGETS[kind]:
            components[comp] = {k: v.float().contiguous() for k, v in getattr(model, comp).state_dict().items()}
        summary["checkpoints"][str(path)] = s
    save_checkpoint(args.out, config=model.cfg, components=components,
                    meta={"source": "convert-official", "inputs": {k: str(p) for k, p in inputs}})
    return summary


def convert_promptir_file(args: argparse.Namespace) -> dict[str, Any]:
    """PromptIR's published all-in-one checkpoint as this package's PromptIR checkpoint (``paper`` preset, images
    read in [0, 1] as the published weights were trained)."""
    from dataclasses import replace

    import torch

    from restorevar.baselines.convert_promptir import convert_promptir
    from restorevar.baselines.promptir import PromptIR, promptir_preset
    from restorevar.checkpoint import read_torch_file, save_checkpoint
    from restorevar.convert import unwrap_state_dict
    from restorevar.data.fetch import sha256_of

    if args.preset != "paper" or args.set:
        raise UserError("the published PromptIR is the paper preset; give --promptir without --preset and --set")
    _check_convert_outputs(args, [("--promptir", args.promptir)])
    cfg = replace(promptir_preset("paper"), images_in_0_1=True)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in PromptIR(cfg).state_dict().items()}
    sd = convert_promptir(unwrap_state_dict(read_torch_file(args.promptir)), expected)
    # PromptIR publishes no digest of its file, so none can be checked; the one read is recorded with the result
    digest = sha256_of(args.promptir)
    save_checkpoint(args.out, config=cfg, components={"promptir": {k: v.float().contiguous() for k, v in sd.items()}},
                    meta={"source": "convert-official", "inputs": {"promptir": str(args.promptir)},
                          "input_sha256": {"promptir": digest}})
    return {"preset": "paper", "model": "promptir", "out": str(args.out), "input_sha256": digest,
            "keys_mapped": len(sd), "parameters": sum(v.numel() for v in sd.values())}


def cmd_convert(args: argparse.Namespace) -> int:
    if args.report:
        from restorevar.fileio import check_output_file

        check_output_file(args.report, "--report")  # before the conversion, not after it
        if args.check_manifest and args.report.resolve() == Path(args.check_manifest).resolve():
            raise UserError(f"--report {args.report} is the manifest being checked; writing there would destroy it; "
                            "choose another --report")
    if args.check_manifest:
        result = check_manifest(Path(args.check_manifest), args.preset, args.set)
    else:
        result = convert_files(args)
    text = json.dumps(result, indent=2)
    if args.report:
        from restorevar.fileio import atomic_write

        atomic_write(args.report, lambda tmp: Path(tmp).write_text(text + "\n"))
    print(text)
    return 0 if result.get("ok", True) else 1


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------
def cmd_restore(args: argparse.Namespace) -> int:
    """Everything that can be checked is checked before the checkpoint is read and before any image is
    written: options, inputs and every output path. An input that cannot be read (a corrupt or oversized
    image, a FIFO, a folder that cannot be listed) is skipped with a warning, the others are restored, and
    the run ends with one error line and exit code 1."""
    from tqdm import tqdm

    from restorevar.fileio import (
        ImageReadError,
        ImageTooLargeError,
        atomic_write,
        image_header_size,
        read_image,
        remove_stale_temps,
    )
    from restorevar.inference import RestoreOptions, Restorer, list_inputs, plan_outputs

    opts = RestoreOptions(mode=args.mode, overlap=args.overlap, batch_size=args.batch_size, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, device=args.device, dtype=args.dtype, plain=args.plain,
                          max_tiles=args.max_tiles)
    opts.validate()
    unlisted: list[tuple[Path, str]] = []
    files = list_inputs(args.inputs, unlisted)
    if not files:
        if unlisted:
            raise UserError(f"{unlisted[0][1]}, and no other input holds images; check its permissions")
        raise UserError(f"no images found in {', '.join(args.inputs)} (looked for .png, .jpg, .bmp, .tif, .webp)")
    folders = [Path(i) for i in args.inputs if Path(i).is_dir()]
    dests = plan_outputs(files, folders, args.out, overwrite=args.overwrite)
    for _, reason in unlisted:
        print(f"restorevar: warning: skipped: {reason}", file=sys.stderr)
    r = Restorer(args.checkpoint, opts)
    if opts.mode == "tile":  # the whole plan, checked and shown before the first image is restored
        tiles = 0
        for path in files:
            size = image_header_size(path)  # None: unreadable, reported when it is read
            tiles += r.check_tiles(size[1], size[0], str(path)) if size else 0
        if not args.quiet:
            print(f"plan: {len(files)} image(s), {tiles} tiles of {r.size} px, {-(-tiles // opts.batch_size)} "
                  f"model passes of up to {opts.batch_size}", file=sys.stderr)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {args.out}: {e.strerror or e}; choose another folder") from None
    remove_stale_temps(args.out)
    failed: list[Path] = [p for p, _ in unlisted]
    done = 0
    for path, dest in tqdm(list(zip(files, dests)), desc=f"restore ({opts.mode}, {r.size}px model, "
                           f"{r.engine.options.name})", unit="img", disable=args.quiet):
        try:
            img = read_image(path, max_pixels=args.max_pixels, exif_orientation=True)
        except ImageTooLargeError as e:
            tqdm.write(f"restorevar: warning: skipped: {path} is {e.size[0]}x{e.size[1]} "
                       f"({e.pixels / 1e6:.1f} megapixels), over the {e.limit}-pixel limit; downscale it or "
                       f"pass --max-pixels {e.pixels}", file=sys.stderr)
            failed.append(path)
            continue
        except ImageReadError as e:
            tqdm.write(f"restorevar: warning: skipped: {e}", file=sys.stderr)
            failed.append(path)
            continue
        out = r.restore_image(img)
        try:
            atomic_write(dest, lambda tmp, out=out: out.save(tmp, format="PNG"), replace=args.overwrite)
        except FileExistsError:
            raise UserError(f"{dest} appeared while this run was restoring (another run writing into --out?) and "
                            f"was left as it is; give each run its own --out ({done} image(s) were written "
                            "before)") from None
        except OSError as e:
            raise UserError(f"cannot write {dest}: {e.strerror or e}; check free space and permissions "
                            f"({done} image(s) were written before)") from None
        done += 1
    print(f"restored {done}/{len(files)} image(s) into {args.out} with {r.checkpoint}", file=sys.stderr)
    if failed:
        print(f"restorevar: error: {len(failed)} input(s) could not be read: {', '.join(map(str, failed[:5]))}"
              + (" ..." if len(failed) > 5 else ""), file=sys.stderr)
        return 1
    return 0


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _add_info(sub, help: str) -> None:
    i = sub.add_parser("info", help=help)
    i.add_argument("--preset", default="paper", help="tiny, small or paper")
    i.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. transformer.positions=ape (repeatable)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)


def _add_convert(sub, help: str) -> None:
    c = sub.add_parser("convert-official", help=help)
    c.add_argument("--vae", type=Path, help="vae_ch160v4096z32.pth or vae_restorevar.ckpt")
    c.add_argument("--restorevar", type=Path, help="restorevar.pth (transformer + refiner)")
    c.add_argument("--var", type=Path, help="var_d16.pth, loaded non-strictly into the transformer")
    c.add_argument("--promptir", type=Path, help="PromptIR's published all-in-one model.ckpt, as the PromptIR baseline")
    c.add_argument("--out", type=Path, help="our checkpoint to write")
    c.add_argument("--check-manifest", metavar="PATH",
                   help="dry run: convert zero tensors shaped as in a shape manifest and load them strictly")
    c.add_argument("--report", type=Path, help="also write the JSON summary here")
    c.add_argument("--preset", default="paper")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--seed", type=int, default=0, help="seed for weights the file does not provide (--var)")
    c.set_defaults(func=cmd_convert)


def _add_restore(sub, help: str) -> None:
    from restorevar.fileio import DEFAULT_MAX_PIXELS
    from restorevar.inference.engine import DTYPES
    from restorevar.inference.restore import MAX_OVERLAP, MAX_TILES

    r = sub.add_parser("restore", help=help)
    r.add_argument("inputs", nargs="+", help="image files or folders of images")
    r.add_argument("--checkpoint", required=True, type=Path,
                   help="checkpoints/train_refiner.pt from `make repro`, or a folder holding it")
    r.add_argument("--out", required=True, type=Path,
                   help="folder for the restored PNGs (same names); not an input folder nor inside one")
    r.add_argument("--overwrite", action="store_true", help="replace restored PNGs already in --out")
    r.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"skip images of more than N pixels, read from the header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS})")
    r.add_argument("--mode", choices=["resize", "tile"], default="resize",
                   help="resize: to the model size and back (default); tile: overlapping model-sized tiles")
    r.add_argument("--overlap", type=float, default=0.25, help=f"tile mode: overlap fraction, 0 to {MAX_OVERLAP} (default 0.25)")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--max-tiles", type=_positive_int, default=MAX_TILES, metavar="N",
                   help=f"tile mode: refuse an image that needs more than N tiles, before any work (default "
                        f"{MAX_TILES})")
    r.add_argument("--top-k", type=int, default=0, help="sample from the top k tokens (default greedy)")
    r.add_argument("--top-p", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=None, help="seed for sampling")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="fp32 (default) or bf16: faster on GPUs and AMX CPUs, tokens may differ (`restorevar bench`)")
    r.add_argument("--plain", action="store_true",
                   help="the unoptimised reference path instead of the fast one (same results in fp32)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_restore)


def _add_data(sub, help: str) -> None:
    from restorevar.data.cli import add_data_parser

    add_data_parser(sub, _Parser, help)


def _add_bench(sub, help: str) -> None:
    from restorevar.inference.bench import add_parser

    add_parser(sub, help)


def _add_stats(sub, help: str) -> None:
    from restorevar.stats.cli import add_stats_parser

    add_stats_parser(sub, _Parser, help)


def _add_regress(sub, help: str) -> None:
    from restorevar.stats.cli import add_regress_parser

    add_regress_parser(sub, help)


# name: (its line in `restorevar --help`, what adds its arguments). Only the command being run gets its
# arguments: adding every command's imported torch, albumentations and scipy, seconds before `--help`,
# `regress` or a usage error could answer.
COMMANDS = {
    "info": ("parameter counts, scales and latent size of a preset", _add_info),
    "convert-official": ("map published VAR/RestoreVAR/PromptIR checkpoints onto this package", _add_convert),
    "restore": ("restore your own images (files or folders) with a trained checkpoint", _add_restore),
    "data": ("synthetic benchmark, manifests, dataset and weight fetching, photo corpus", _add_data),
    "bench": ("time the plain and fast inference paths, their agreement and training throughput", _add_bench),
    "stats": ("paired statistics over the per-image results", _add_stats),
    "regress": ("compare a run's metrics.json with a committed baseline", _add_regress),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or given ``command``, that command's arguments alone (the others are their names and
    help lines, and a name that is no command gets none)."""
    p = _Parser(prog="restorevar", description="RestoreVAR: all-in-one image restoration suite")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help, add) in COMMANDS.items():
        if command is None or command == name:
            add(sub, help)
        else:
            sub.add_parser(name, help=help)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # inside the handlers: building a command's parser imports torch, seconds in which a Ctrl-C can come
        # the command is the first word: the top level has no option but --help
        args = build_parser(next((a for a in argv if not a.startswith("-")), "")).parse_args(argv)
        return args.func(args)
    except UserError as e:
        print(f"restorevar: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("restorevar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
