"""Analytic per-GPU memory of a FLUX-Lightning training config at its real shapes (no model is built).

Shapes come from `model.pretrained` (`transformer/config.json` and the other components' configs) or, for a name
that is not a local folder, from the known FLUX.1-dev / FLUX.1-schnell configs. The estimate follows the reference
recipe (reference.md section 4): LoRA on the 12 target names by PEFT suffix matching, 57 discriminator heads
`h1 = act(GN(conv1 f))`, `h = act(GN(conv2 h1)) + h1`, `conv_out(h)`, bf16 O2 with fp32 master weights and fp32
AdamW moments for the LoRA and the heads; the graphs that coexist are those of `ppflux_lightning.objectives`.

Activations are counted per op from what Paddle's autograd keeps for backward (checked op by op on the CPU
allocator): a multiply keeps both inputs, a Linear its input, LayerNorm its input, GroupNorm its (contiguous) input
and output, GELU / LeakyReLU their input, softmax its output, adds / concats / views nothing. The bench
`bench/bench_memory.py` compares the whole estimate with measured peaks of real train steps.
"""

import dataclasses
import json
import os
import re

from ..lora.adapters import LIGHTNING_TARGETS, target_matcher
from ..models.flux_transformer import FluxConfig
from ..utils.errors import ConfigError

MLP_RATIO = 4          # FLUX's MLP width / inner width (models.blocks)
TIME_PROJ_DIM = 256    # sinusoidal timestep / guidance embedding width (models.embeddings)
GIB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# The reference's LoRA targets (reference.md section 4), matched by PEFT suffix: 12 per double block and the single
# blocks' attn.to_q/k/v.
REFERENCE_TARGETS = LIGHTNING_TARGETS  # the reference's 12 names, matched by suffix

# Known configs for a `model.pretrained` that is a hub name, not a local folder (diffusers / HF config.json values).
KNOWN_TRANSFORMERS = {"flux.1-dev": {}, "flux.1-schnell": {"guidance_embeds": False}}
FLUX1_COMPONENTS = {
    "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "max_position_embeddings": 77},
    "text_encoder_2": {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
                       "num_heads": 64, "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu"},
    "vae": {"in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False},
}

# Working sets beyond the saved tensors, in token-width units (tokens x inner width x activation bytes), measured
# once per block type on the CPU allocator: a no-grad block forward holds its output and these intermediates at its
# peak; a block's backward holds these gradients on top of its saved tensors. On the CPU path the attention backward
# adds two [H, S, S] gradients while the tensors saved after the attention (double: out-projection, residual,
# modulation and MLP, 5 + 2 x MLP ratio units; single: 8 units) are already freed.
NOGRAD_WORKSET = {"double": 5.2, "single": 10.0}
BACKWARD_WORKSET = {"double": 4.7, "single": 6.0}
AFTER_ATTENTION = {"double": 5 + 2 * MLP_RATIO, "single": 8}
# Latent-size fp32 tensors a step holds besides the graphs: latents, noise, x_t, the three re-noising draws, pred,
# target, the teacher / student / DMD velocities and re-noised inputs.
STEP_LATENTS = 12


# ---------------------------------------------------------------------------------------------------- shapes
def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _known_name(pretrained):
    name = str(pretrained).rstrip("/").split("/")[-1].lower()
    return name if name in KNOWN_TRANSFORMERS else None


def transformer_config(pretrained):
    """The transformer's `FluxConfig` from `<pretrained>/transformer/config.json`, or a known FLUX.1 name."""
    path = os.path.join(str(pretrained), "transformer", "config.json")
    if os.path.isfile(path):
        return FluxConfig.from_dict(_read_json(path))
    known = _known_name(pretrained)
    if known is None:
        raise ConfigError(f"model.pretrained {pretrained!r} has no transformer/config.json and is not a known "
                          f"model name ({', '.join(sorted(KNOWN_TRANSFORMERS))})")
    return FluxConfig(**KNOWN_TRANSFORMERS[known])


def component_config(pretrained, name):
    """A component's config dict (`text_encoder`, `text_encoder_2`, `vae`), or None when the folder has none."""
    path = os.path.join(str(pretrained), name, "config.json")
    if os.path.isfile(path):
        return _read_json(path)
    if os.path.isdir(str(pretrained)):
        return None
    return dict(FLUX1_COMPONENTS[name]) if _known_name(pretrained) else None


def linear_layers(fc):
    """Every `nn.Linear` of the transformer as (name, in_features, out_features), diffusers names, model order."""
    c, m = fc.inner_dim, MLP_RATIO * fc.inner_dim
    out = [("x_embedder", fc.in_channels, c), ("context_embedder", fc.joint_attention_dim, c)]
    embedders = [("timestep_embedder", TIME_PROJ_DIM)] + ([("guidance_embedder", TIME_PROJ_DIM)]
                                                          if fc.guidance_embeds else [])
    for name, dim in embedders + [("text_embedder", fc.pooled_projection_dim)]:
        out += [(f"time_text_embed.{name}.linear_1", dim, c), (f"time_text_embed.{name}.linear_2", c, c)]
    for i in range(fc.num_layers):
        p = f"transformer_blocks.{i}."
        out += [(p + "norm1.linear", c, 6 * c), (p + "norm1_context.linear", c, 6 * c)]
        out += [(p + f"attn.{n}", c, c) for n in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
                                                  "add_v_proj", "to_add_out")]
        for ff in ("ff", "ff_context"):
            out += [(p + f"{ff}.net.0.proj", c, m), (p + f"{ff}.net.2", m, c)]
    for i in range(fc.num_single_layers):
        p = f"single_transformer_blocks.{i}."
        out += [(p + "norm.linear", c, 3 * c), (p + "proj_mlp", c, m)]
        out += [(p + f"attn.{n}", c, c) for n in ("to_q", "to_k", "to_v")]
        out += [(p + "proj_out", c + m, c)]
    out += [("norm_out.linear", c, 2 * c), ("proj_out", c, fc.patch_size**2 * fc.out_channels)]
    return out


def transformer_params(fc):
    """Parameter count of the transformer: the Linears (with bias) and the per-head RMSNorm scales."""
    linear = sum(i * o + o for _, i, o in linear_layers(fc))
    norms = fc.attention_head_dim * (4 * fc.num_layers + 2 * fc.num_single_layers)
    return linear + norms


def lora_modules(fc, target_modules=None):
    """The Linears a LoRA with these targets adapts: [(name, in, out)]."""
    matches = target_matcher(target_modules)
    found = [layer for layer in linear_layers(fc) if matches(layer[0])]
    if not found:
        raise ConfigError(f"lora.target_modules {target_modules!r} match no Linear of the transformer")
    return found


def lora_params(fc, rank, target_modules=None):
    return sum(rank * (i + o) for _, i, o in lora_modules(fc, target_modules))


def num_heads(fc):
    """Discriminator heads: one per double and per single block."""
    return fc.num_layers + fc.num_single_layers


def head_params(channels, hidden):
    """One head: conv1 (channels -> hidden), GN, conv2 (hidden -> hidden), GN, conv_out (hidden -> 1)."""
    return (channels * hidden + hidden) + 2 * hidden + (hidden * hidden + hidden) + 2 * hidden + (hidden + 1)


def discriminator_params(fc, head_channels=0):
    return num_heads(fc) * head_params(fc.inner_dim, head_channels or fc.inner_dim)


def clip_text_params(cfg):
    """HF CLIPTextModel: token + position embeddings, pre-LN blocks (attention with bias, MLP), final LayerNorm."""
    d, i = cfg["hidden_size"], cfg["intermediate_size"]
    layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d
    return (cfg["vocab_size"] + cfg["max_position_embeddings"]) * d + cfg["num_hidden_layers"] * layer + 2 * d


def t5_encoder_params(cfg):
    """HF T5EncoderModel: shared embedding, blocks (bias-free attention, (gated) FFN, RMS norms), final norm."""
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    gated = str(cfg.get("feed_forward_proj", "relu")).startswith("gated")
    layer = 4 * d * inner + (3 if gated else 2) * d * ff + 2 * d
    return cfg["vocab_size"] * d + cfg["num_layers"] * layer + cfg["relative_attention_num_buckets"] * \
        cfg["num_heads"] + d


def vae_params(cfg):
    """diffusers AutoencoderKL (encoder, decoder, mid-block attention, optional quant convs)."""
    conv = lambda i, o, k=3: k * k * i * o + o
    def resnet(i, o):
        return 2 * i + conv(i, o) + 2 * o + conv(o, o) + (i * o + o if i != o else 0)
    chans, per, lat = list(cfg["block_out_channels"]), cfg.get("layers_per_block", 2), cfg["latent_channels"]
    top = chans[-1]
    mid = 2 * resnet(top, top) + 2 * top + 4 * (top * top + top)
    enc, prev = conv(cfg.get("in_channels", 3), chans[0]), chans[0]
    for k, c in enumerate(chans):
        enc += sum(resnet(prev if j == 0 else c, c) for j in range(per)) + (conv(c, c) if k < len(chans) - 1 else 0)
        prev = c
    enc += mid + 2 * top + conv(top, 2 * lat)
    dec, prev = conv(lat, top), top
    for k, c in enumerate(reversed(chans)):
        dec += sum(resnet(prev if j == 0 else c, c) for j in range(per + 1)) + (conv(c, c) if k < len(chans) - 1
                                                                                 else 0)
        prev = c
    dec += mid + 2 * chans[0] + conv(chans[0], cfg.get("out_channels", 3))
    quant = (conv(2 * lat, 2 * lat, 1) if cfg.get("use_quant_conv", True) else 0) + \
        (conv(lat, lat, 1) if cfg.get("use_post_quant_conv", True) else 0)
    return enc + dec + quant


# ---------------------------------------------------------------------------------------------------- the estimate
@dataclasses.dataclass
class Shapes:
    """What the activations depend on: model config, tokens, batch, dtypes, attention kind."""

    fc: FluxConfig
    text_tokens: int
    image_tokens: int
    batch: int
    act: int                 # bytes per activation / weight element in the training dtype
    cpu: bool                # CPU attention (materialised [B, H, S, S] scores) instead of the fused GPU kernel
    lora: list               # adapted (name, in, out)
    rank: int
    head_hidden: int
    lora_bytes: int = 0      # bytes per LoRA element; 0 = the training dtype

    @property
    def tokens(self):
        return self.text_tokens + self.image_tokens


def _stream_tokens(name, s):
    """Tokens an adapted module runs on: text stream, image stream, joint (single blocks) or per sample."""
    if name.startswith("transformer_blocks."):
        if name.endswith(("norm1.linear", "norm1_context.linear")):
            return 1
        return s.text_tokens if re.search(r"\.(attn\.add_|attn\.to_add_out|ff_context\.)", name) else s.image_tokens
    if name.startswith("single_transformer_blocks."):
        return 1 if name.endswith("norm.linear") else s.tokens
    return 1


def block_saved(s, kind, index=0, adapters=True):
    """Bytes one sample's forward of block `index` of `kind` keeps for backward (block input excluded); with the
    adapters off (the teacher) the LoRA branches do not run."""
    c, m, f = s.fc.inner_dim, MLP_RATIO, 4
    rope = 3 if not s.cpu else 2    # fp32 rope copies kept per q / k (the GPU path flips pairs: one more)
    if kind == "double":
        # modulate 2, q/k RMSNorm 1 each, attention q k v out 4, to_out 1, residual + modulate 3, MLP 2m + 1
        act_units, f32_units = 13 + 2 * m, 2 + 2 * rope
    else:
        # modulate 2, proj_mlp out m, concat 1 + m, q/k RMSNorm 2, attention q k v (+ out on GPU), proj_out 1
        act_units, f32_units = 9 + 2 * m + (0 if s.cpu else 1), 2 + 2 * rope
    prefix = f"transformer_blocks.{index}." if kind == "double" else f"single_transformer_blocks.{index}."
    adapted = [(n, i) for n, i, _ in s.lora if n.startswith(prefix)] if adapters else []
    lora_bytes = s.lora_bytes or s.act
    # each adapter keeps its rank-r tensor; adapters in another dtype also keep a cast copy of their input
    lora = sum(_stream_tokens(n, s) * (s.rank + (i if lora_bytes != s.act else 0)) for n, i in adapted) * lora_bytes
    return s.tokens * c * (act_units * s.act + f32_units * f) + lora + _scores(s)


def _scores(s):
    """Attention probabilities kept for backward: [H, S, S] on the CPU path, the log-sum-exp on the GPU."""
    h, n = s.fc.num_attention_heads, s.tokens
    return h * n * n * s.act if s.cpu else h * n * 4


def _token_bytes(s, tokens=None, width=None):
    return (s.tokens if tokens is None else tokens) * (width or s.fc.inner_dim) * s.act


def grad_forward(s, recompute, with_final=True):
    """Bytes one sample's transformer forward with gradient keeps until backward: the student's (pred / reflow), or
    the adapters-off teacher's run to the block features for the adversarial G term when `with_final` is False."""
    fc, student = s.fc, with_final
    inputs = (fc.num_layers + fc.num_single_layers + 1) * _token_bytes(s)   # block inputs + last output
    final = 2 * _token_bytes(s, s.image_tokens) if with_final else s.image_tokens * fc.in_channels * s.act
    if recompute:
        return inputs + final
    return inputs + final + sum(block_saved(s, "double", i, student) for i in range(fc.num_layers)) + \
        sum(block_saved(s, "single", i, student) for i in range(fc.num_single_layers))


def nograd_peak(s):
    """Extra bytes one sample's no-grad forward holds at its peak (one block's working set)."""
    def work(kind):
        return NOGRAD_WORKSET[kind] * _token_bytes(s) + (2 * _scores(s) if s.cpu else 0)
    return max(work("double") if s.fc.num_layers else 0, work("single") if s.fc.num_single_layers else 0)


def backward_peak(s, recompute):
    """Extra bytes one sample's block backward holds: its recomputed saved tensors (with recompute) and gradients."""
    def work(kind):
        saved = block_saved(s, kind) if recompute else 0
        grads = BACKWARD_WORKSET[kind] * _token_bytes(s)
        if s.cpu:
            grads = max(grads, 2 * _scores(s) - AFTER_ATTENTION[kind] * _token_bytes(s))
        return saved + grads
    return max(work("double") if s.fc.num_layers else 0, work("single") if s.fc.num_single_layers else 0)


def head_saved(s):
    """Bytes the 57 heads keep for backward per sample: GN input + output twice, h1, h (hidden width)."""
    return num_heads(s.fc) * 6 * s.image_tokens * s.head_hidden * s.act


def features_kept(s):
    """Bytes of the no-grad teacher features one sample keeps for the D step: double blocks' image tokens, and the
    single blocks' image-token views, which keep their whole joint sequence alive."""
    fc = s.fc
    return fc.num_layers * _token_bytes(s, s.image_tokens) + fc.num_single_layers * _token_bytes(s)


@dataclasses.dataclass
class Line:
    name: str
    bytes: float
    note: str = ""


@dataclasses.dataclass
class Estimate:
    """Static lines, the generator-step and discriminator-step peaks (each a list of lines) and the summary."""

    shapes: Shapes
    dtype: str
    static: list
    steps: dict              # {"generator": [Line], "discriminator": [Line]}
    counts: dict             # parameter counts and module counts
    notes: list
    alive: dict = dataclasses.field(default_factory=dict)   # {group: which forwards coexist}

    @property
    def static_bytes(self):
        return sum(x.bytes for x in self.static)

    def step_bytes(self, group):
        return self.static_bytes + sum(x.bytes for x in self.steps[group])

    @property
    def peak_bytes(self):
        return max(self.step_bytes(g) for g in self.steps) if self.steps else self.static_bytes

    @property
    def peak_group(self):
        return max(self.steps, key=self.step_bytes)


def human(n):
    """A parameter count as 11.901B / 89.7M / 12.3K."""
    for div, suffix, digits in ((1e9, "B", 3), (1e6, "M", 1), (1e3, "K", 1)):
        if n >= div:
            return f"{n / div:.{digits}f}{suffix}"
    return str(int(n))


def resolve_estimate_dtype(name, device):
    """`auto` is bfloat16 on a GPU (the estimate assumes a bf16-capable one) and float32 on the CPU."""
    if name not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"model.dtype must be auto, float32 or bfloat16, got {name!r}")
    return ("bfloat16" if device == "gpu" else "float32") if name == "auto" else name


def image_tokens(cfg):
    """Packed image tokens at data.resolution: (resolution / (2 * VAE scale factor))^2."""
    vae = component_config(cfg.model.pretrained, "vae")
    factor = 2 ** (len(vae["block_out_channels"]) - 1) if vae else 8
    side = int(cfg.data.resolution) // (2 * factor)
    if side < 1 or int(cfg.data.resolution) % (2 * factor):
        raise ConfigError(f"data.resolution {cfg.data.resolution} is not a multiple of {2 * factor}")
    return side * side


def estimate(cfg, device="gpu", world_size=1, encoders=None, lora_dtype="float32"):
    """The per-GPU (per-process) memory `Estimate` of training config `cfg` (a validated `Config`).

    `device`: "gpu" (fused attention) or "cpu" (materialised attention, as run on this machine). `encoders`:
    True / False forces the text encoders and VAE resident or not; None decides from the config. `lora_dtype`: the
    adapters' dtype; the trainer keeps them in float32 (engine.trainer), the reference's O2 casts them to bf16."""
    if device not in ("gpu", "cpu"):
        raise ConfigError(f"device must be gpu or cpu, got {device!r}")
    fc = transformer_config(cfg.model.pretrained)
    dtype = resolve_estimate_dtype(cfg.model.dtype, device)
    act = BYTES[dtype]
    mixed = dtype != "float32"
    obj = cfg.objectives
    adv = obj.adversarial.enabled
    targets = cfg.lora.target_modules
    modules = lora_modules(fc, targets)
    rank = int(cfg.lora.rank)
    for key, value, low in (("lora.rank", rank, 1), ("train.batch_size", cfg.train.batch_size, 1),
                            ("objectives.adversarial.head_channels", obj.adversarial.head_channels, 0),
                            ("model.max_sequence_length", cfg.model.max_sequence_length, 1)):
        if int(value) < low:
            raise ConfigError(f"{key} must be >= {low}, got {value!r}")
    if lora_dtype not in BYTES:
        raise ConfigError(f"lora dtype must be one of {sorted(BYTES)}, got {lora_dtype!r}")
    lora_bytes = BYTES[lora_dtype]
    s = Shapes(fc, int(cfg.model.max_sequence_length), image_tokens(cfg), int(cfg.train.batch_size), act,
               device == "cpu", modules, rank, int(obj.adversarial.head_channels) or fc.inner_dim, lora_bytes)
    recompute = bool(cfg.model.gradient_checkpointing)
    b = s.batch

    n_base, n_lora = transformer_params(fc), lora_params(fc, rank, targets)
    n_d = discriminator_params(fc, obj.adversarial.head_channels) if adv else 0
    counts = {"transformer": n_base, "lora": n_lora, "lora_modules": len(modules), "discriminator": n_d,
              "discriminator_heads": num_heads(fc) if adv else 0}
    state = (4 + 8) if mixed else 8    # fp32 master copy (bf16 O2) + two fp32 AdamW moments
    opt_note = "fp32 master + 2 fp32 AdamW moments" if mixed else "2 fp32 AdamW moments"
    lora_state = (4 + 8) if lora_bytes < 4 else 8
    lora_note = f"{lora_dtype}; " + ("fp32 master + 2 fp32 AdamW moments" if lora_bytes < 4 else
                                     "2 fp32 AdamW moments")
    static = [Line("transformer weights", n_base * act, f"{human(n_base)} params, {dtype}")]
    notes = []
    if encoders is None:
        cached = cfg.data.type == "cached"
        validating = bool(cfg.train.validate_every) and bool(list(cfg.train.validation_prompts))
        encoders = not cached or validating
        if cached and validating:
            notes.append("the text encoders and VAE are loaded for validation images (train.validate_every)")
        elif cached:
            notes.append("data.type=cached: T5/CLIP embeddings and VAE latents are precomputed, encoders not loaded")
    if encoders:
        for name, label, fn in (("text_encoder_2", "T5 encoder", t5_encoder_params),
                                ("text_encoder", "CLIP text encoder", clip_text_params), ("vae", "VAE", vae_params)):
            ccfg = component_config(cfg.model.pretrained, name)
            if ccfg is None:
                notes.append(f"no {name}/config.json in model.pretrained: {label} not counted")
                continue
            n = fn(ccfg)
            counts[name] = n
            static.append(Line(f"{label} weights", n * act, f"{human(n)} params, {dtype}"))
    static.append(Line("LoRA weights + optimizer", n_lora * (lora_bytes + lora_state),
                       f"{len(modules)} modules, rank {rank}, {human(n_lora)} params; {lora_note}"))
    if adv:
        static.append(Line("D heads weights + optimizer", n_d * (act + state),
                           f"{counts['discriminator_heads']} heads x width {s.head_hidden}, {human(n_d)} params;"
                           f" {opt_note}"))
    batch = Line("batch and step tensors", b * (s.text_tokens * fc.joint_attention_dim + fc.pooled_projection_dim
                                                + STEP_LATENTS * s.image_tokens * fc.in_channels) * 4,
                 f"T5/CLIP embeddings; {STEP_LATENTS} fp32 latent-size tensors (x_t, draws, pred, target, ...)")

    def allreduce(n):
        """Our multi-process all-reduce: every gradient cast to fp32 and concatenated, then divided (two copies)."""
        return [Line("gradient all-reduce buffers", 2 * 4 * n, "flat fp32 copy + its mean (world size > 1)")] \
            if world_size > 1 else []

    steps = {}
    # ---- generator step: pred (grad), teacher/student no-grad batches, adversarial G (teacher with grad to its
    # input + heads), reflow (grad); all graphs live at backward.
    need_target = obj.consistency.enabled or adv
    n_nograd = int(need_target) + int(obj.dmd.enabled)
    pred = b * grad_forward(s, recompute)
    graphs = [Line("student forward with grad (pred)", pred, "recompute: block inputs only" if recompute else
                   "all block activations")]
    if adv:
        graphs.append(Line("teacher features with grad + D heads (adversarial G)",
                           b * (grad_forward(s, recompute, with_final=False) + head_saved(s)),
                           f"{counts['discriminator_heads']} heads keep 6 x {s.head_hidden} per image token"))
    if obj.reflow.enabled:
        graphs.append(Line("student forward with grad (reflow)", pred))
    grads = [Line("LoRA gradients", n_lora * lora_bytes)]  # the heads are frozen in the G step: no gradients
    phases = [[graphs[0], Line(f"no-grad forwards, batch {n_nograd * b} (teacher step, student target, DMD)",
                               n_nograd * b * nograd_peak(s), "block working set")],
              graphs + grads + [Line("backward working set", b * backward_peak(s, recompute),
                                     "one block recomputed + its gradients" if recompute else "one block's gradients")],
              grads + allreduce(n_lora)]
    steps["generator"] = [batch] + max(phases, key=lambda lines: sum(x.bytes for x in lines))
    alive = {"generator": f"{len(graphs)} transformer forwards with grad alive at backward "
                          f"({', '.join(x.name.split('(')[-1].rstrip(')') for x in graphs)}); no-grad forwards of "
                          f"batch {n_nograd * b} before them"}
    # ---- discriminator step: no-grad target + pred, no-grad teacher features of real and fake (2B) kept for the
    # heads, the heads with grad; then the D backward.
    if adv:
        d_grads = Line("D-head gradients", n_d * act)
        phases = [[Line(f"no-grad forwards, batch {2 * b} (student target + pred)", 2 * b * nograd_peak(s),
                        "block working set")],
                  [Line("teacher features, no grad, real + fake", 2 * b * features_kept(s),
                        f"{num_heads(fc)} features of batch {2 * b}"),
                   Line("D heads activations, real + fake", 2 * b * head_saved(s)), d_grads,
                   Line("heads backward working set", 2 * b * 3 * s.image_tokens * s.head_hidden * s.act)],
                  [d_grads] + allreduce(n_d)]
        steps["discriminator"] = [batch] + max(phases, key=lambda lines: sum(x.bytes for x in lines))
        alive["discriminator"] = (f"no transformer forward with grad; a no-grad teacher pass of batch {2 * b} whose "
                                  f"{num_heads(fc)} features stay alive for the heads (with grad)")
    return Estimate(s, dtype, static, steps, counts, notes, alive)


# ---------------------------------------------------------------------------------------------------- report
def gib(n):
    return n / GIB


def format_estimate(est, title=None):
    """A markdown report: shapes, static memory, each step's peak lines, the per-GPU peak (GiB, or MiB when small)."""
    s, fc = est.shapes, est.shapes.fc
    unit, scale = ("GiB", GIB) if est.peak_bytes >= GIB else ("MiB", 2**20)
    size = lambda n: f"{n / scale:.2f}"
    out = [title] if title else []
    out.append(f"shapes: {fc.num_layers} double + {fc.num_single_layers} single blocks, width {fc.inner_dim} "
               f"({fc.num_attention_heads} heads x {fc.attention_head_dim}); sequence {s.text_tokens} text + "
               f"{s.image_tokens} image tokens; batch {s.batch}; {est.dtype}; "
               f"{'CPU attention' if s.cpu else 'fused GPU attention'}")
    out += ["", f"| memory | {unit} | note |", "|---|---:|---|"]
    for x in est.static:
        out.append(f"| {x.name} | {size(x.bytes)} | {x.note} |")
    out.append(f"| **static total** | **{size(est.static_bytes)}** | |")
    for group, lines in est.steps.items():
        for x in lines:
            out.append(f"| {group} step: {x.name} | {size(x.bytes)} | {x.note} |")
        out.append(f"| **{group} step peak** | **{size(est.step_bytes(group))}** | |")
    out.append("")
    where = f" ({est.peak_group} step)" if est.steps else ""
    out.append(f"per-GPU peak: {size(est.peak_bytes)} {unit}{where}")
    out += [f"{group} step: {text}" for group, text in est.alive.items()]
    out += [f"note: {note}" for note in est.notes]
    return "\n".join(out)
