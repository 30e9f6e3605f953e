"""What lets the big profiles train on a GPU: fp32 tokens under autocast, gradient accumulation, checkpointing."""
import pytest
import torch

from conftest import make_tiny
from restorevar.train.prior import prior_logits


def _bf16_cpu_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_targets_and_condition_are_fp32_tokens_under_bf16_autocast(images):
    deg, clean = images
    model = make_tiny(gains=0.5)
    cond_ref, x_in_ref, target_ref = model.teacher_inputs(deg, clean)
    with _bf16_cpu_autocast():
        # the encoder under autocast would run in bf16: its latent, and the tokens, would differ from these
        enc_bf16 = model.vqvae.encode(clean)
        cond, x_in, target = model.teacher_inputs(deg, clean)
        logits, target_tf = model.teacher_forcing(deg, clean)
        _, target_prior = prior_logits(model, clean)
    assert enc_bf16.dtype == torch.bfloat16  # so autocast really was on for the encoder
    assert cond.dtype == x_in.dtype == torch.float32
    assert torch.equal(cond, cond_ref) and torch.equal(x_in, x_in_ref)
    assert torch.equal(target, target_ref) and torch.equal(target_tf, target_ref)
    assert torch.equal(target_prior, model.teacher_inputs(clean, clean)[2])
    assert logits.dtype == torch.bfloat16  # while the transformer itself does run under autocast


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("parts", [2, 4])
def test_gradient_accumulation_gives_the_big_batch_gradient(parts):
    from restorevar.train.common import accumulate_backward
    from restorevar.train.transformer import transformer_loss

    g = torch.Generator().manual_seed(5)
    batch = {"degraded": torch.rand(4, 3, 32, 32, generator=g) * 2 - 1,
             "clean": torch.rand(4, 3, 32, 32, generator=g) * 2 - 1, "degradation": [0, 1, 2, 3]}
    model = make_tiny(["transformer.drop_path_rate=0"], gains=0.3).train()

    def micro_loss(b):
        loss, logits, target = transformer_loss(model, b["degraded"], b["clean"], 0.0, False, "scale")
        return loss, {"acc": (logits.argmax(-1) == target).float().mean().item()}

    whole = accumulate_backward(batch, 1, micro_loss)
    ref = _grads(model.transformer)
    model.transformer.zero_grad(set_to_none=True)
    split = accumulate_backward(batch, parts, micro_loss)
    got = _grads(model.transformer)
    assert ref.keys() == got.keys() and len(ref) > 10
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=f"{n} differs with {parts} micro-batches")
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert split["acc"] == pytest.approx(whole["acc"], rel=1e-6)


def _counting(forward, calls: list[int]):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)
    return wrapped


def test_activation_checkpointing_keeps_the_loss_and_gradients():
    from restorevar.train.transformer import transformer_loss

    g = torch.Generator().manual_seed(6)
    deg, clean = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    out = {}
    for flag in (False, True):
        model = make_tiny(["transformer.drop_path_rate=0.3"], gains=0.3).train()  # recomputation replays drop-path
        model.transformer.activation_checkpointing = flag
        calls: list[int] = []
        for b in model.transformer.blocks:  # counts calls to forward itself (recomputation bypasses module hooks)
            b.forward = _counting(b.forward, calls)
        torch.manual_seed(0)
        loss, _, _ = transformer_loss(model, deg, clean, 0.0, False)
        loss.backward()
        out[flag] = (loss.item(), _grads(model.transformer))
        # the flag is honoured, not ignored: with it, every block runs again in the backward to recompute
        assert len(calls) == (2 if flag else 1) * len(model.transformer.blocks)
    assert out[True][0] == out[False][0]
    for n, gr in out[False][1].items():
        torch.testing.assert_close(out[True][1][n], gr, rtol=1e-5, atol=1e-7)


def test_grad_accum_must_divide_the_batch():
    from restorevar.errors import UserError
    from restorevar.train.common import LoopConfig

    with pytest.raises(UserError, match="grad_accum=3 must be a positive divisor of loop.batch_size=8"):
        LoopConfig(batch_size=8, grad_accum=3).validate()


@pytest.mark.parametrize("pairs", ["manifest", "onthefly"])
def test_batches_built_by_workers_are_the_loops_own_and_restart_at_any_step(pairs, tmp_path):
    from restorevar.data.synth import SynthConfig, synth
    from restorevar.train.common import DataConfig, LoopConfig, PrefetchedBatches, make_train_val

    if pairs == "manifest":
        synth(tmp_path, SynthConfig(size=32, train_per_degradation=4, test_per_degradation=1), progress=False)
    data = {"pairs": pairs, "train_manifest": str(tmp_path / "train.json"), "crop": 32}
    loop = LoopConfig(steps=8, batch_size=3, seed=4)
    serial, _ = make_train_val(DataConfig(**data), loop, "cpu")
    workers, _ = make_train_val(DataConfig(**data, num_workers=2), loop, "cpu")
    assert isinstance(workers, PrefetchedBatches)
    for step in (0, 1, 2, 5, 6, 3):  # in order, then a jump (a resume), then back
        a, b = serial.batch(step, "cpu"), workers.batch(step, "cpu")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], (step, k)
