"""Typed configs reject unknown keys and ill-typed values."""
import re

import pytest

from restorevar.config import apply_overrides, from_dict, to_dict
from restorevar.errors import UserError
from restorevar.models import RestoreVARConfig, get_preset


def test_unknown_keys_are_rejected_with_the_valid_ones_listed():
    with pytest.raises(UserError, match=r"unknown config key\(s\) transformer.dept; valid keys .*depth"):
        from_dict(RestoreVARConfig, {"transformer": {"dept": 3}})
    with pytest.raises(UserError, match="unknown config key"):
        from_dict(RestoreVARConfig, {"decoder": {}})


def test_a_missing_required_key_is_a_user_error_naming_it():
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        size: int

    @dataclass
    class Outer:
        name: str
        inner: Inner = field(default_factory=lambda: Inner(1))
        tags: list[str] = field(default_factory=list)

    with pytest.raises(UserError, match=r"missing config key\(s\) name for Outer"):
        from_dict(Outer, {"tags": []})
    with pytest.raises(UserError, match=r"missing config key\(s\) inner.size for Inner"):
        from_dict(Outer, {"name": "x", "inner": {}})
    assert from_dict(Outer, {"name": "x"}) == Outer("x")  # defaults and default factories fill the rest


def test_values_are_type_checked():
    with pytest.raises(UserError, match="transformer.depth: expected an integer"):
        from_dict(RestoreVARConfig, {"transformer": {"depth": "16"}})
    with pytest.raises(UserError, match="refiner.kind: 'diffusion' is not one of"):
        from_dict(RestoreVARConfig, {"refiner": {"kind": "diffusion"}})
    with pytest.raises(UserError, match="vqvae.patch_nums must end at the latent size 32"):
        from_dict(RestoreVARConfig, {"vqvae": {"patch_nums": [1, 2, 4]}})


def test_round_trip_and_overrides():
    cfg = get_preset("small")
    assert from_dict(RestoreVARConfig, to_dict(cfg)) == cfg
    c2 = apply_overrides(cfg, ["transformer.conditioning=discrete", "vqvae.beta=0.5"])
    assert c2.transformer.conditioning == "discrete" and c2.vqvae.beta == 0.5 and cfg.vqvae.beta == 0.25
    with pytest.raises(UserError, match="must look like"):
        apply_overrides(cfg, ["transformer.depth"])


def test_presets_are_consistent():
    for name in ("tiny", "small", "paper"):
        cfg = get_preset(name)
        assert cfg.vqvae.patch_nums[-1] == cfg.vqvae.latent_size
    assert get_preset("small").vqvae.image_size == 128 and get_preset("small").transformer.depth == 6
    assert len(get_preset("paper").vqvae.patch_nums) == 10


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_floats_must_be_finite(value):
    with pytest.raises(UserError, match="vqvae.beta: expected a finite number"):
        from_dict(RestoreVARConfig, {"vqvae": {"beta": value}})


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_overrides_parsed_as_json_must_be_finite_too(text):
    with pytest.raises(UserError, match="vqvae.beta: expected a finite number"):
        apply_overrides(get_preset("tiny"), [f"vqvae.beta={text}"])


def test_an_override_past_pythons_digit_limit_is_refused_as_text():
    with pytest.raises(UserError, match="transformer.depth: expected an integer, got '9999"):
        apply_overrides(get_preset("tiny"), ["transformer.depth=" + "9" * 5000])


def test_booleans_are_not_numbers():
    with pytest.raises(UserError, match="transformer.depth: expected an integer, got True"):
        from_dict(RestoreVARConfig, {"transformer": {"depth": True}})
    with pytest.raises(UserError, match="vqvae.beta: expected a number, got False"):
        from_dict(RestoreVARConfig, {"vqvae": {"beta": False}})
    assert from_dict(RestoreVARConfig, {"vqvae": {"beta": 1}}).vqvae.beta == 1.0  # an integer is a number


@pytest.mark.parametrize(("value", "kw", "message"), [
    (0, {}, "x must be between 1 and 10, got 0"),
    (11, {}, "x must be between 1 and 10, got 11"),
    (1, {"low_open": True}, "x must be in (1, 10], got 1"),
    (10.0, {"high_open": True}, "x must be in [1, 10), got 10"),
    (float("nan"), {}, "x must be between 1 and 10, got nan"),  # NaN compares false both ways: never in range
    (10**5000, {}, "x must be between 1 and 10, got an integer of about 5001 digits"),  # past Python's str() limit
], ids=["below", "above", "open-low", "open-high", "nan", "5001-digits"])
def test_check_range_names_the_key_the_bounds_and_the_value(value, kw, message):
    from restorevar.config import check_range

    with pytest.raises(UserError, match=re.escape(message)):
        check_range("x", value, 1, 10, **kw)
    check_range("x", 5, 1, 10, **kw)
