"""Export a FLUX pipeline as four static graphs (PIR `.json` + `.pdiparams`), its tokenizers and a `deploy.yaml`.

Layout of an export folder:
    deploy.yaml                      format version, steps, schedule, guidance, resolutions, dtype, graph inputs
    text_encoder/model.{json,pdiparams}     CLIP: input_ids [B, 77] -> pooled [B, D]
    text_encoder_2/model.{json,pdiparams}   T5: input_ids [B, L] -> hidden [B, L, D]
    transformer/model.{json,pdiparams}      packed latents, text, sigma, ids (and guidance) -> velocity
    vae_decoder/model.{json,pdiparams}      latents [B, C, h, w] -> image [B, 3, H, W] in [0, 1]
    tokenizer/, tokenizer_2/                the tokenizers' own files
The folder is written under a temporary name and renamed, so it appears complete or not at all.
"""

import dataclasses
import os
import shutil

import paddle
import yaml
from paddle.static import InputSpec
from tqdm import tqdm

from .. import __version__
from ..models import vae as vae_io
from ..pipelines.flux_pipeline import MAX_T5_LENGTH
from ..utils.atomic import atomic_dir, check_output_dir
from ..utils.errors import ConfigError
from ..utils.files import DEPLOY_FILE, is_export_folder  # noqa: F401  (DEPLOY_FILE: public here too)
from .graphs import (
    LatentDecoderGraph,
    PooledTextGraph,
    TextStatesGraph,
    TransformerGraph,
    TransformerGraphNoGuidance,
)

FORMAT_VERSION = 1
GRAPH_NAMES = ("text_encoder", "text_encoder_2", "transformer", "vae_decoder")
TOKENIZER_NAMES = ("tokenizer", "tokenizer_2")
GRAPH_PREFIX = "model"
GRAPH_SUFFIXES = (".json", ".pdiparams")


def cinn_requested():
    """True when the environment asks for CINN (`FLAGS_use_cinn=1` or `true`)."""
    flag = os.environ.get("FLAGS_use_cinn", "")  # noqa: SIM112  (Paddle flag names are lower case)
    return flag.strip().lower() in ("1", "true", "yes", "on")


def enable_prim_for_cinn():
    """With `FLAGS_use_cinn=1` on a build that has CINN, let Paddle decompose ops into primitives (static and
    dynamic shapes) so CINN can fuse them; set before tracing and before creating predictors. Returns whether it
    did."""
    if not (cinn_requested() and paddle.is_compiled_with_cinn()):
        return False
    os.environ["FLAGS_prim_all"] = "true"  # noqa: SIM112
    os.environ["FLAGS_prim_enable_dynamic"] = "true"  # noqa: SIM112
    paddle.framework.core._set_prim_all_enabled(True)
    paddle.set_flags({"FLAGS_prim_enable_dynamic": True})
    return True


def check_resolutions(resolutions, multiple):
    """[(height, width), ...] -> sorted unique list of [h, w]; each side a positive multiple of `multiple`."""
    out = []
    for hw in resolutions:
        if len(hw) != 2:
            raise ConfigError(f"a resolution is (height, width), got {hw!r}")
        h, w = int(hw[0]), int(hw[1])
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ConfigError(f"resolution {h}x{w} must have both sides positive multiples of {multiple}")
        if [h, w] not in out:
            out.append([h, w])
    if not out:
        raise ConfigError("give at least one resolution to export")
    return sorted(out)


def graph_paths(folder, name):
    """The two files of an exported graph."""
    return [os.path.join(folder, name, GRAPH_PREFIX + s) for s in GRAPH_SUFFIXES]


def save_graph(layer, specs, folder, name):
    """Trace `layer` with `specs` (full graph, no Python fallback) and save it as `folder/name/model.*`."""
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
    paddle.jit.save(static, os.path.join(folder, name, GRAPH_PREFIX))


def _spec_dict(specs):
    return [{"name": s.name, "shape": [int(d) for d in s.shape], "dtype": str(s.dtype).replace("paddle.", "")}
            for s in specs]


def _vae_factors(vae):
    shift = vae.config.shift_factor
    return {
        "latent_channels": int(vae.config.latent_channels),
        "scale_factor": int(vae_io.scale_factor(vae)),
        "scaling_factor": float(vae.config.scaling_factor),
        "shift_factor": 0.0 if shift is None else float(shift),
    }


def _save_tokenizer(pipe, name, folder):
    """Copy the tokenizer's original files when the pipeline knows them (every loader reads those), else save it."""
    source = getattr(pipe, "_tokenizer_dirs", {}).get(name)
    if source:
        shutil.copytree(source, folder)
    else:
        getattr(pipe, name).save_pretrained(folder)


def transformer_specs(config, seq_len, text_len):
    """InputSpecs of the transformer graph; batch dynamic, `seq_len` None for a dynamic image-token count."""
    specs = [
        InputSpec([None, seq_len, config.in_channels], "float32", "hidden_states"),
        InputSpec([None, text_len, config.joint_attention_dim], "float32", "encoder_hidden_states"),
        InputSpec([None, config.pooled_projection_dim], "float32", "pooled_projections"),
        InputSpec([None], "float32", "timestep"),
        InputSpec([seq_len, 3], "float32", "img_ids"),
        InputSpec([text_len, 3], "float32", "txt_ids"),
    ]
    if config.guidance_embeds:
        specs.append(InputSpec([None], "float32", "guidance"))
    return specs


def transformer_graph(transformer):
    return (TransformerGraph if transformer.config.guidance_embeds else TransformerGraphNoGuidance)(transformer)


def _graph_specs(pipe, resolutions, max_sequence_length, clip_length, vae):
    """InputSpecs per graph. Batch is dynamic; sequence and spatial sizes are fixed for one resolution and dynamic
    (None) for several, in which case the pipeline accepts exactly the listed resolutions (checked at run time)."""
    packed = 2 * vae["scale_factor"]
    fixed = len(resolutions) == 1
    seq = (resolutions[0][0] // packed) * (resolutions[0][1] // packed) if fixed else None
    lat_h = resolutions[0][0] // vae["scale_factor"] if fixed else None
    lat_w = resolutions[0][1] // vae["scale_factor"] if fixed else None
    return {
        "text_encoder": [InputSpec([None, clip_length], "int64", "input_ids")],
        "text_encoder_2": [InputSpec([None, max_sequence_length], "int64", "input_ids")],
        "transformer": transformer_specs(pipe.transformer.config, seq, max_sequence_length),
        "vae_decoder": [InputSpec([None, vae["latent_channels"], lat_h, lat_w], "float32", "latents")],
    }


def load_pipeline(model_dir, dtype="auto", lora=None, lora_scale=1.0, lora_alpha=None):
    """`FluxPipeline` from a diffusers-layout folder, with the LoRAs (if any: a file, or `parse_lora_specs` input
    for several) fused into the transformer weights at their weights and the adapter layers removed, so the traced
    graph holds plain Linear layers. `lora_scale` / `lora_alpha` apply to entries that do not set their own."""
    from ..pipelines import FluxPipeline

    pipe = FluxPipeline.from_pretrained(model_dir, dtype=dtype)
    if lora:
        pipe.load_lora_stack(lora, lora_scale, lora_alpha)
        pipe.fuse_lora()  # every active adapter, each at its weight
        pipe.unload_lora_weights()
    return pipe


def export_pipeline(
    pipe,
    output,
    resolutions,
    steps=4,
    guidance=3.5,
    max_sequence_length=None,
    sigmas=None,
    lora=None,
    overwrite=False,
    protect=(),
):
    """Trace and save `pipe`'s text encoders, transformer and VAE decoder into `output`, with its tokenizers and a
    `deploy.yaml`. `pipe` has diffusers' attribute names (transformer, vae, text_encoder(_2), tokenizer(_2),
    scheduler). Fuse any LoRA before calling; `lora` ([{"file", "weight", "alpha"}], the fused adapters) is only
    recorded. An existing `output` is replaced only when it is an export folder and `overwrite` is set; `protect`
    lists inputs it must not touch (the source model). Returns `output`."""
    check_output_dir(output, overwrite, is_export_folder, protect)
    if int(steps) < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if max_sequence_length is None:  # the T5 tokenizer's model_max_length, at most 512 (16 for the toy model)
        max_sequence_length = min(MAX_T5_LENGTH, int(pipe.tokenizer_2.model_max_length))
    if not 1 <= int(max_sequence_length) <= MAX_T5_LENGTH:
        raise ConfigError(f"max_sequence_length must be in [1, {MAX_T5_LENGTH}], got {max_sequence_length}")
    vae = _vae_factors(pipe.vae)
    resolutions = check_resolutions(resolutions, 2 * vae["scale_factor"])
    clip_length = int(pipe.tokenizer.model_max_length)
    specs = _graph_specs(pipe, resolutions, int(max_sequence_length), clip_length, vae)
    layers = {
        "text_encoder": PooledTextGraph(pipe.text_encoder),
        "text_encoder_2": TextStatesGraph(pipe.text_encoder_2),
        "transformer": transformer_graph(pipe.transformer),
        "vae_decoder": LatentDecoderGraph(pipe.vae),
    }
    prim = enable_prim_for_cinn()
    scheduler_config = dataclasses.asdict(pipe.scheduler.config)
    deploy = {
        "format_version": FORMAT_VERSION,
        "ppflux_lightning_version": __version__,
        "dtype": str(pipe.transformer.dtype).replace("paddle.", ""),
        "steps": int(steps),
        "guidance": float(guidance),
        "sigmas": None if sigmas is None else [float(s) for s in sigmas],
        "scheduler": scheduler_config,
        "resolutions": resolutions,
        "max_sequence_length": int(max_sequence_length),
        "clip_max_length": clip_length,
        "guidance_embeds": bool(pipe.transformer.config.guidance_embeds),
        "vae": vae,
        "lora": lora,
        "prim_for_cinn": prim,
        "graphs": {name: {"inputs": _spec_dict(specs[name])} for name in GRAPH_NAMES},
    }
    with atomic_dir(output, overwrite, is_export_folder, protect, marker="export") as tmp:
        for name in tqdm(GRAPH_NAMES, desc="export", unit="graph"):
            with paddle.no_grad():
                save_graph(layers[name], specs[name], tmp, name)
        for name in TOKENIZER_NAMES:
            _save_tokenizer(pipe, name, os.path.join(tmp, name))
        with open(os.path.join(tmp, DEPLOY_FILE), "w") as f:
            yaml.safe_dump(deploy, f, sort_keys=False)
    return output
