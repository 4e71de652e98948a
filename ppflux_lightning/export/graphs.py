"""The four sub-models of the FLUX pipeline as layers with plain tensor inputs and outputs, ready for tracing.

Each wrapper fixes the calling convention of its graph (input names, float32 outputs) so that the exported program
and the predictor that runs it agree without looking at the model code.
"""

import paddle
import paddle.nn as nn

from ..models import vae as vae_io


class TransformerGraph(nn.Layer):
    """Velocity of packed latents. Timestep and guidance are sigmas in [0, 1] ([B]); the output is float32.
    The transformer's projections are fused (one q|k|v GEMM per stream, one q|k|v|mlp GEMM per single block) unless
    `fuse=False`; the traced program then holds only the fused weights."""

    def __init__(self, transformer, fuse=True):
        super().__init__()
        self.transformer = transformer
        if fuse:
            transformer.fuse_projections()

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance):
        out = self.transformer(
            hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance
        )
        return out.astype("float32")


class TransformerGraphNoGuidance(TransformerGraph):
    """As `TransformerGraph` for transformers without a guidance embedding (FLUX.1-schnell style)."""

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids):
        out = self.transformer(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids)
        return out.astype("float32")


class PooledTextGraph(nn.Layer):
    """CLIP text model: token ids [B, 77] -> pooled output [B, D] (float32)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids, return_dict=True).pooler_output.astype("float32")


class TextStatesGraph(nn.Layer):
    """T5 encoder: token ids [B, L] -> last hidden state [B, L, D] (float32)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids, return_dict=True).last_hidden_state.astype("float32")


class LatentDecoderGraph(nn.Layer):
    """VAE decoder on normalised latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1] (float32); the latent
    un-normalisation `z / scaling + shift` and the map from [-1, 1] to [0, 1] are part of the graph."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        image = vae_io.decode(self.vae, latents).astype("float32")
        return paddle.clip(image / 2 + 0.5, 0.0, 1.0)
