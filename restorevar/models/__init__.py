"""Every model component of RestoreVAR and its ablation variants."""
from restorevar.models.discriminator import DiscriminatorConfig, PatchGAN
from restorevar.models.presets import PRESETS, get_preset
from restorevar.models.quantizer import MultiScaleQuantizer
from restorevar.models.refiner import RefinerConfig, build_refiner
from restorevar.models.restorevar import RestoreVAR, RestoreVARConfig
from restorevar.models.transformer import RestoreVARTransformer, TransformerConfig
from restorevar.models.vqvae import VQVAE, VQVAEConfig

__all__ = [
    "PRESETS",
    "VQVAE",
    "DiscriminatorConfig",
    "MultiScaleQuantizer",
    "PatchGAN",
    "RefinerConfig",
    "RestoreVAR",
    "RestoreVARConfig",
    "RestoreVARTransformer",
    "TransformerConfig",
    "VQVAEConfig",
    "build_refiner",
    "get_preset",
]
