"""Compatibility with the published checkpoints (names and shapes in restorevar/reference, shipped with the package)."""
import json
import re

import pytest
import torch

from conftest import make_tiny
from restorevar.checkpoint import config_from_checkpoint, load_checkpoint, load_components
from restorevar.cli import check_manifest, main
from restorevar.convert import OFFICIAL_SHAPES as MANIFEST
from restorevar.models import RestoreVAR


def config_model(ckpt):
    return RestoreVAR(config_from_checkpoint(ckpt))


def test_manifest_converts_and_loads_strictly_into_paper_preset():
    res = check_manifest(MANIFEST, "paper", [])
    assert res["ok"]
    for name in ("vae_ch160v4096z32", "vae_restorevar", "restorevar_d16_512"):
        s = res["checkpoints"][name]
        assert s["loaded_strictly"] and not s["unmapped"] and not s["shape_mismatches"] and not s["missing"]
        assert s["keys_mapped"] + s["keys_ignored"] == s["keys_total"]
    rv = res["checkpoints"]["restorevar_d16_512"]
    # only recomputed buffers and the constant zero k-bias are ignored
    assert set(rv["ignored_reasons"]) == {
        "block-causal mask, rebuilt from patch_nums", "RoPE table, rebuilt from patch_nums and head dim",
        "conditioning RoPE table, rebuilt", "scale index per token, rebuilt from patch_nums",
        "conditioning level index, rebuilt", "constant zero k-bias buffer; the k projection has no bias"}
    assert res["checkpoints"]["vae_ch160v4096z32"]["keys_ignored"] == 0


def test_var_d16_loads_non_strictly_and_reports_what_was_dropped():
    s = check_manifest(MANIFEST, "paper", [])["checkpoints"]["var_d16"]
    dropped = set(s["dropped"])
    assert {"pos_1LC", "pos_start", "head_nm.ada_lin.1.weight", "blocks.3.ada_lin.1.bias"} <= dropped
    assert all(re.search(r"ada_lin|pos_|zero_k_bias|attn_bias_for_masking|lvl_1L", k) for k in dropped)
    new = set(s["newly_initialised"])
    assert "transformer.blocks.0.cross_attn.kv_proj.weight" in new and "transformer.sos_gain" in new
    assert "transformer.blocks.0.self_attn.qkv.weight" not in new  # pretrained, kept
    assert not s["unmapped"]


def test_var_d16_ape_variant_drops_only_the_mismatched_position_table():
    s = check_manifest(MANIFEST, "paper", ["transformer.positions=ape"])["checkpoints"]["var_d16"]
    assert "pos_1LC" in s["dropped"] and "pos_start" not in s["dropped"]


# -- round trip through real files, with an independent inverse of the renaming -----------------
def _to_official_vae(sd, n_levels):
    out = {}
    for k, v in sd.items():
        k = re.sub(r"decoder\.levels\.(\d+)\.", lambda m: f"decoder.up.{n_levels - 1 - int(m.group(1))}.", k)
        k = k.replace("encoder.levels.", "encoder.down.").replace(".blocks.", ".block.").replace(".attns.", ".attn.")
        k = k.replace(".shortcut.", ".nin_shortcut.").replace(".proj.", ".proj_out.")
        k = k.replace("mid.block1", "mid.block_1").replace("mid.block2", "mid.block_2").replace("mid.attn.", "mid.attn_1.")
        k = re.sub(r"(encoder\.down\.\d+)\.resample\.", r"\1.downsample.", k)
        k = re.sub(r"(decoder\.up\.\d+)\.resample\.", r"\1.upsample.", k)
        k = k.replace("quantizer.codebook.", "quantize.embedding.").replace("quantizer.phi.convs.", "quantize.quant_resi.qresi_ls.")
        k = k.replace("quantizer.usage_ema_SV", "quantize.ema_vocab_hit_SV")
        out[k] = v.clone()
    return out


def _to_official_restorevar(t_sd, r_sd):
    out = {}
    for k, v in t_sd.items():
        k = k.replace(".self_attn.cos_scale.log_scale_1H11", ".attn.scale_mul_1H11").replace(".cos_scale.log_scale_1H11", ".scale_mul_1H11")
        k = k.replace(".self_attn.qkv.", ".attn.mat_qkv.").replace(".self_attn.", ".attn.")
        k = {"cond_proj.weight": "cond_proj4.weight", "cond_proj.bias": "cond_proj4.bias",
             "cond_embed.weight": "word_embed_cond.weight", "cond_embed.bias": "word_embed_cond.bias",
             "cond_lvl_embed.weight": "lvl_embed_cond.weight", "sos_cond_embed.weight": "global_embed.weight",
             "sos_cond_embed.bias": "global_embed.bias", "sos_gain": "global_embed_gain"}.get(k, k)
        out[k] = v.clone()
    for i in range(len([k for k in t_sd if k.endswith("self_attn.q_bias")])):
        out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros_like(t_sd[f"blocks.{i}.self_attn.q_bias"])
    out["attn_bias_for_masking"] = torch.zeros(1, 1, 3, 3)  # recomputed buffers: any content is ignored
    for k, v in r_sd.items():
        k = k.replace("pos_1NW", "pos_embedding").replace("pos_cond_1LW", "pos_embedding_cond")
        k = re.sub(r"layers\.(\d+)\.attn\.to_out\.", r"transformer.layers.\1.0.to_out.0.", k)
        k = re.sub(r"layers\.(\d+)\.attn\.", r"transformer.layers.\1.0.", k)
        k = re.sub(r"layers\.(\d+)\.ffn\.(\d+)\.", r"transformer.layers.\1.1.net.\2.", k)
        k = re.sub(r"layers\.(\d+)\.cross\.", r"transformer.layers.\1.2.", k)
        k = k.replace("norm_out.", "transformer.norm.")
        out["vae_refiner." + k] = v.clone()
    return out


def test_round_trip_of_official_format_files(tmp_path, images):
    src = make_tiny(seed=7, gains=0.6)
    n_levels = len(src.cfg.vqvae.ch_mult)
    torch.save({"state_dict": _to_official_vae(src.vqvae.state_dict(), n_levels)}, tmp_path / "vae.ckpt")
    torch.save({"module." + k: v for k, v in
                _to_official_restorevar(src.transformer.state_dict(), src.refiner.state_dict()).items()},
               tmp_path / "restorevar.pth")
    out = tmp_path / "ours.pt"
    rc = main(["convert-official", "--preset", "tiny", "--vae", str(tmp_path / "vae.ckpt"),
               "--restorevar", str(tmp_path / "restorevar.pth"), "--out", str(out)])
    assert rc == 0
    ckpt = load_checkpoint(out)
    # the published cross-attention LayerNorms use PyTorch's default eps, and the converted file says so
    assert ckpt["config"]["transformer"]["cross_norm_eps"] == 1e-5
    assert {b.cross_attn.norm_kv.eps for b in config_model(ckpt).transformer.blocks} == {1e-5}
    dst = make_tiny(seed=99)
    load_components(dst, ckpt, ["vqvae", "transformer", "refiner"], out)
    a, b = src.restore(images[0]), dst.restore(images[0])
    torch.testing.assert_close(a.image_B3HW, b.image_B3HW, atol=0, rtol=0)


def test_conversion_into_the_wrong_preset_is_a_one_line_error(tmp_path, capsys):
    src = make_tiny()
    torch.save(_to_official_vae(src.vqvae.state_dict(), 3), tmp_path / "vae.pth")
    rc = main(["convert-official", "--preset", "small", "--vae", str(tmp_path / "vae.pth"), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not match the small preset" in err
    assert not (tmp_path / "o.pt").exists()


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path, capsys):
    torch.save({"weights": {"a": torch.zeros(1)}, "obj": NotATensor()}, tmp_path / "evil.pth")
    rc = main(["convert-official", "--preset", "tiny", "--vae", str(tmp_path / "evil.pth"), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "refused for safety" in err


def test_manifest_summary_is_json_and_written_atomically(tmp_path, capsys):
    report = tmp_path / "compat.json"
    assert main(["convert-official", "--check-manifest", str(MANIFEST), "--report", str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(report.read_text()) == printed and printed["ok"]


def _fake_var_cache(tmp_path, monkeypatch, src):
    """VAR's two files in official format (made from a tiny model), in a weights cache whose registry entries
    carry their digests, as the real entries carry the published ones."""
    from dataclasses import replace

    from restorevar.data import weights
    from restorevar.data.fetch import sha256_of
    from restorevar.models.transformer import reads_condition

    cache = tmp_path / "weights"
    (cache / "var").mkdir(parents=True)
    vae = _to_official_vae(src.vqvae.state_dict(), len(src.cfg.vqvae.ch_mult))
    plain = {k: v for k, v in src.transformer.state_dict().items() if not reads_condition(k)}
    d16 = {k: v for k, v in _to_official_restorevar(plain, {}).items() if k != "attn_bias_for_masking"}
    for i in range(len(src.transformer.blocks)):  # AdaLN, which RestoreVAR drops
        d16[f"blocks.{i}.ada_lin.1.weight"] = torch.ones(6 * src.cfg.transformer.width, 1)
    for name, sd in (("var_vae", vae), ("var_d16", d16)):
        spec = weights.BY_NAME[name]
        torch.save(sd, cache / spec.relpath)
        monkeypatch.setitem(weights.BY_NAME, name, replace(spec, sha256=sha256_of(cache / spec.relpath),
                                                            size=(cache / spec.relpath).stat().st_size))
    monkeypatch.setenv("RESTOREVAR_WEIGHTS", str(cache))
    return cache


def test_training_starts_from_vars_published_files_after_their_checksum(tmp_path, monkeypatch):
    from restorevar.convert import load_official_into
    from restorevar.errors import UserError
    from restorevar.models.transformer import reads_condition

    src = make_tiny(seed=3, gains=0.0)
    cache = _fake_var_cache(tmp_path, monkeypatch, src)
    dst = make_tiny(seed=11)
    fresh_cond = {k: v.clone() for k, v in dst.transformer.state_dict().items() if reads_condition(k)}
    load_official_into(dst, "var")
    summary = load_official_into(dst, "var_d16")
    for k, v in src.vqvae.state_dict().items():
        assert torch.equal(dst.vqvae.state_dict()[k], v), k
    for k, v in dst.transformer.state_dict().items():  # VAR's weights, and the condition path newly initialised
        assert torch.equal(v, fresh_cond[k] if reads_condition(k) else src.transformer.state_dict()[k]), k
    assert sorted(summary["newly_initialised"]) == sorted(f"transformer.{k}" for k in fresh_cond)
    # a file that is not the published one is never unpickled
    path = cache / "var" / "var_d16.pth"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"init_from var_d16: .*restorevar data fetch-weights"):
        load_official_into(make_tiny(), "var_d16")


def test_a_frozen_tokenizer_stage_exports_vars_vae_unchanged(tmp_path, monkeypatch):
    from restorevar.config import from_dict
    from restorevar.data.synth import SynthConfig, synth
    from restorevar.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    src = make_tiny(seed=4)
    _fake_var_cache(tmp_path, monkeypatch, src)
    synth(tmp_path / "synth", SynthConfig(size=32, train_per_degradation=2, test_per_degradation=1), progress=False)
    cfg = from_dict(TokenizerTrainConfig, {
        "model": {"preset": "tiny"}, "init_from": "var", "frozen": True,
        "data": {"train_manifest": str(tmp_path / "synth" / "train.json"), "crop": 32},
        "loop": {"steps": 5, "batch_size": 2, "val_batches": 1, "device": "cpu"}})
    last = train_tokenizer(cfg, tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    for k, v in src.vqvae.state_dict().items():
        assert torch.equal(ck["components"]["vqvae"][k], v), k
    assert "val_psnr_continuous" in last and ck["step"] == 1


def test_vars_vae_converts_for_another_scale_schedule():
    """The VQ-VAE's weights do not depend on the scales; only its per-scale usage statistics do, and start afresh."""
    s = check_manifest(MANIFEST, "paper", ["vqvae.image_size=128", "vqvae.patch_nums=[1,2,3,4,6,8]"])
    vae = s["checkpoints"]["vae_ch160v4096z32"]
    assert vae["loaded_strictly"] and "reset for this model's 6" in " ".join(vae["ignored_reasons"])
