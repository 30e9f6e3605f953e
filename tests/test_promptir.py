"""restorevar.baselines.promptir: the PromptIR baseline, written from its paper and the published shapes."""
import pytest
import torch

from restorevar.baselines.promptir import (
    PromptGeneration,
    PromptIR,
    PromptIRConfig,
    promptir_preset,
)
from restorevar.errors import UserError
from restorevar.metrics.cost import count_parameters


def test_the_paper_preset_counts_table_6s_35_59_million_parameters():
    m = PromptIR(promptir_preset("paper"))
    assert count_parameters(m) == 35_592_263  # the RestoreVAR paper's Table 6: 35.59 M
    unused = sum(p.numel() for p in m.unused.parameters())
    assert unused == 215_296  # the published model's six uncalled 1 x 1 convolutions are part of that count


def _image(seed=0, size=32):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_zero_output_layer_returns_the_input_exactly():
    torch.manual_seed(0)
    m = PromptIR(promptir_preset("tiny"))
    x = _image()
    with torch.no_grad():
        m.out.weight.zero_()
        assert torch.equal(m(x), x)  # the global residual: PromptIR predicts a correction of its input


def test_the_unused_published_layers_change_no_output():
    cfgs = [PromptIRConfig(**{**promptir_preset("tiny").__dict__, "unused_published_layers": u}) for u in (False, True)]
    outs = []
    for cfg in cfgs:
        torch.manual_seed(3)
        with torch.no_grad():
            outs.append(PromptIR(cfg)(_image(1)))
    assert torch.equal(outs[0], outs[1])


def test_the_prompt_weights_follow_the_features_and_a_single_prompt_ignores_them():
    torch.manual_seed(0)
    gen = PromptGeneration(prompt_dim=4, prompt_len=3, prompt_size=4, feature_dim=6)
    a, b = torch.randn(1, 6, 8, 8), torch.randn(1, 6, 8, 8) + 3
    assert not torch.allclose(gen(a), gen(b))
    one = PromptGeneration(prompt_dim=4, prompt_len=1, prompt_size=4, feature_dim=6)
    assert torch.allclose(one(a), one(b))  # softmax over one prompt: weight 1 whatever the features
    assert one(a).shape == (1, 4, 8, 8)  # resized to the features' size


def test_training_reaches_every_parameter_but_the_unused_ones():
    torch.manual_seed(0)
    m = PromptIR(PromptIRConfig(**{**promptir_preset("tiny").__dict__, "unused_published_layers": True}))
    torch.nn.functional.l1_loss(m(_image()), _image(1)).backward()
    no_grad = sorted(n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum())
    assert no_grad and all(n.startswith("unused.") for n in no_grad)


def test_bad_settings_and_sizes_are_one_line_errors():
    with pytest.raises(UserError, match=r"heads\[1\]=3 must divide level 2"):
        PromptIR(PromptIRConfig(dim=8, heads=(1, 3, 2, 2)))
    with pytest.raises(UserError, match="prompt interaction has"):
        PromptIR(PromptIRConfig(dim=8, heads=(1, 1, 4, 4), prompt_dims=(8, 8, 2)))
    with pytest.raises(UserError, match="unknown PromptIR preset 'huge'"):
        promptir_preset("huge")
    m = PromptIR(promptir_preset("tiny"))
    with pytest.raises(UserError, match=r"multiples of 8 \(three halvings\), got 30 x 32"):
        m(torch.zeros(1, 3, 30, 32))


def test_a_trained_promptir_is_scored_and_costed_like_the_model(tmp_path):
    """Its checkpoint loads back to the same outputs; as an evaluation method it gives the network's output clamped
    to [-1, 1]; its cost has the model's keys, with its one component end to end."""
    from conftest import make_tiny
    from restorevar.baselines.promptir import load_promptir
    from restorevar.checkpoint import save_checkpoint
    from restorevar.metrics.cost import measure_network_cost
    from restorevar.metrics.scoring import network_method

    torch.manual_seed(0)
    net = PromptIR(promptir_preset("tiny"))
    with torch.no_grad():
        net.out.weight.mul_(50)  # outputs well past [-1, 1], so that the clamp shows
    save_checkpoint(tmp_path / "p.pt", config=net.cfg, components={"promptir": net.state_dict()})
    back = load_promptir(tmp_path / "p.pt")
    x = _image(2)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
        raw = net(x)
    out = torch.stack(network_method(back, torch.device("cpu"))([{}, {}], x))
    assert raw.abs().max() > 1 and torch.equal(out, raw.clamp(-1, 1))
    cost = measure_network_cost(back, 32, batch_size=1, warmup=0, repeats=1)
    assert cost["params"] == {"end_to_end": count_parameters(net)} and cost["flops_per_image"]["end_to_end"] > 0
    assert cost["seconds_per_image"]["end_to_end"] > 0 and cost["image_size"] == 32
    m = make_tiny()
    save_checkpoint(tmp_path / "r.pt", config=m.cfg, components={"vqvae": m.vqvae.state_dict()})
    with pytest.raises(UserError, match="holds a RestoreVAR checkpoint, not PromptIR"):
        load_promptir(tmp_path / "r.pt")


# ------------------------------------------------------------------------------------------------
# The published checkpoint
# ------------------------------------------------------------------------------------------------
def _published_from(net: PromptIR) -> dict:
    """``net``'s weights under the published names and shapes, inside a Lightning-style checkpoint."""
    from restorevar.baselines.convert_promptir import official_shapes, rename

    sd = net.state_dict()
    pub = {f"net.{k}": sd[rename(k)].reshape(shape) for k, shape in official_shapes().items()}
    return {"epoch": 149, "global_step": 1000, "pytorch-lightning_version": "2.0.0", "state_dict": pub,
            "hyper_parameters": {}}


def test_every_published_tensor_fills_one_parameter_of_the_paper_preset_with_its_shape():
    from restorevar.baselines.convert_promptir import convert_promptir, official_shapes, rename

    shapes = official_shapes()
    with torch.device("meta"):
        ours = PromptIR(promptir_preset("paper"))
    expected = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert len(shapes) == len(expected) == 548
    zero = torch.zeros(())
    sd = convert_promptir({f"net.{k}": zero.expand(s) for k, s in shapes.items()}, expected)
    assert set(sd) == set(expected)  # strict: nothing missing, nothing left over
    assert rename("net.prompt3.prompt_param") == "prompt3.prompts_NCSS" and sd["prompt3.prompts_NCSS"].shape == (
        5, 320, 16, 16)  # the published batch axis of one is dropped
    assert rename("net.up4_3.body.0.weight") == "up3.0.weight"
    assert rename("net.noise_level1.norm2.body.bias") == "interact1.block.norm2.bias"
    assert rename("net.reduce_noise_channel_3.weight") == "unused.5.weight"
    with pytest.raises(UserError, match=r"not PromptIR's published .*\(548 problem"):
        convert_promptir({}, expected)  # an empty file fills nothing
    renamed_wrong = {f"net.{k}": zero.expand(s) for k, s in shapes.items()} | {"net.extra.weight": zero.expand(1)}
    with pytest.raises(UserError, match=r"net.extra.weight: no counterpart"):
        convert_promptir(renamed_wrong, expected)


def test_the_published_checkpoint_converts_into_a_baseline_checkpoint_that_reads_images_in_0_1(tmp_path, capsys):
    import json
    from dataclasses import replace

    from restorevar.baselines.promptir import load_promptir
    from restorevar.cli import main

    torch.manual_seed(0)
    net = PromptIR(promptir_preset("paper")).eval()
    torch.save(_published_from(net), tmp_path / "model.ckpt")
    out = tmp_path / "promptir_published.pt"
    assert main(["convert-official", "--promptir", str(tmp_path / "model.ckpt"), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["keys_mapped"] == 548 and summary["parameters"] == 35_592_263 and len(summary["input_sha256"]) == 64
    loaded = load_promptir(out)
    assert loaded.cfg == replace(promptir_preset("paper"), images_in_0_1=True)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1  # this package's range; the published weights see (x + 1) / 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net((x + 1) / 2) * 2 - 1, atol=0, rtol=0)


def test_a_converted_checkpoint_refuses_the_wrong_file_and_flags_in_one_line(tmp_path, capsys):
    from restorevar.cli import main

    torch.manual_seed(0)
    tiny = PromptIR(promptir_preset("tiny"))
    torch.save({"state_dict": {f"net.{k}": v for k, v in tiny.state_dict().items()}}, tmp_path / "tiny.ckpt")
    for args, words in (
        (["--promptir", str(tmp_path / "tiny.ckpt"), "--out", str(tmp_path / "o.pt")], "not PromptIR's published"),
        (["--promptir", str(tmp_path / "tiny.ckpt"), "--vae", str(tmp_path / "tiny.ckpt"), "--out",
          str(tmp_path / "o.pt")], "without --vae"),
        (["--promptir", str(tmp_path / "tiny.ckpt"), "--preset", "tiny", "--out", str(tmp_path / "o.pt")],
         "paper preset"),
        (["--promptir", str(tmp_path / "tiny.ckpt"), "--out", str(tmp_path / "tiny.ckpt")], "destroy the original"),
    ):
        assert main(["convert-official", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not (tmp_path / "o.pt").exists()
