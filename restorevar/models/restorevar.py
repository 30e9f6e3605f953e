"""The whole RestoreVAR model: tokenizer, transformer and refiner wired together."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from restorevar.models.discriminator import DiscriminatorConfig
from restorevar.models.refiner import RefinerConfig, build_refiner
from restorevar.models.transformer import GenerateOutput, RestoreVARTransformer, TransformerConfig, fp32_region
from restorevar.models.vqvae import VQVAE, VQVAEConfig


@dataclass
class RestoreVARConfig:
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def validate(self) -> None:
        for part in (self.vqvae, self.transformer, self.refiner, self.discriminator):
            part.validate()


@dataclass
class RestoreOutput:
    image_B3HW: torch.Tensor  # in [-1, 1]
    generated: GenerateOutput
    f_cont_BChw: torch.Tensor


class RestoreVAR(nn.Module):
    def __init__(self, cfg: RestoreVARConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        v, t = cfg.vqvae, cfg.transformer
        self.vqvae = VQVAE(v)
        self.transformer = RestoreVARTransformer(t, v.vocab_size, v.z_channels, v.patch_nums)
        self.refiner = build_refiner(cfg.refiner, v.z_channels, t.width, v.latent_size**2, v.n_tokens)

    def condition(self, x_deg_B3HW: torch.Tensor) -> torch.Tensor:
        """Conditioning tokens ``(B, N, Cvae)`` of the degraded image.

        ``continuous``: the encoder output before quant_conv, one token per latent pixel.
        ``discrete``: the codebook vectors of its multi-scale quantization, every scale concatenated.
        """
        if self.cfg.transformer.conditioning == "continuous":
            return self.vqvae.encode_raw(x_deg_B3HW).flatten(2).transpose(1, 2)
        idx_list = self.vqvae.image_to_idx(x_deg_B3HW)
        return self.vqvae.quantizer.multiscale_embeddings(idx_list)

    @torch.no_grad()
    def teacher_inputs(self, x_deg_B3HW: torch.Tensor, x_clean_B3HW: torch.Tensor):
        """Conditioning ``(B, N, Cvae)``, teacher-forcing input ``(B, L - first_l, Cvae)`` and targets ``(B, L)``.

        Always fp32, even inside an autocast region: bf16 encoding and codebook lookup would give targets other
        than the fp32 tokens that validation, the refiner and evaluation see.
        """
        with fp32_region(x_deg_B3HW.device.type):
            cond_BNCv = self.condition(x_deg_B3HW.float())
            idx_list = self.vqvae.image_to_idx(x_clean_B3HW.float())
            x_in_BLCv = self.vqvae.quantizer.idx_to_teacher_input(idx_list)
        return cond_BNCv, x_in_BLCv, torch.cat([i.flatten(1) for i in idx_list], dim=1)

    def teacher_forcing(self, x_deg_B3HW: torch.Tensor, x_clean_B3HW: torch.Tensor,
                        reads: list[torch.Tensor] | None = None,
                        moved: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, L, V)`` and the clean targets ``(B, L)`` for the cross-entropy loss; ``reads`` collects
        each block's ungated cross-attention output, ``moved`` the latent the logits skip reads."""
        cond_BNCv, x_in_BLCv, target_BL = self.teacher_inputs(x_deg_B3HW, x_clean_B3HW)
        return self.transformer(cond_BNCv, x_in_BLCv, reads=reads, moved=moved), target_BL

    @torch.no_grad()
    def restore(self, x_deg_B3HW: torch.Tensor, **generate_kwargs) -> RestoreOutput:
        gen = self.transformer.generate(self.condition(x_deg_B3HW), self.vqvae.quantizer, **generate_kwargs)
        f_cont = self.refiner.refine(gen.f_hat_BChw, gen.hidden_BLC, seed=generate_kwargs.get("seed"))
        return RestoreOutput(self.vqvae.decode(f_cont), gen, f_cont)
