"""The training config schema: every key the trainer understands, with the reference FLUX-Lightning defaults.

`ppflux_lightning.config` merges YAML files (`_BASE_`) and `-o key=value` overrides onto `DEFAULTS` and rejects any
key not present here. A value of `None` means "no default: must be given" only for the keys in `REQUIRED`.

Data contract (what the trainer reads from one dataset item, a dict):
  - `pixel_values`: float32 `[3, H, W]` in [-1, 1] and `caption`: str (image datasets), or
  - `prompt_embeds` `[L, joint_attention_dim]` and `pooled_prompt_embeds` `[pooled_dim]` (cached embeddings; then the
    text encoders are not loaded), optionally `latents` `[C, h, w]` already VAE-encoded and scaled.
  A dataset returns `None` for a bad record; the trainer skips it and counts it.
"""

from ..objectives import config_defaults

DEFAULTS = {
    "model": {
        "pretrained": None,            # diffusers-layout FLUX folder (transformer/, scheduler/, vae/, text encoders)
        "dtype": "auto",               # auto (bfloat16 on a bf16-capable GPU, else float32) | float32 | bfloat16
        "guidance": 3.5,               # guidance embedding value fed to student and teacher (FLUX.1-dev)
        "max_sequence_length": 512,    # T5 tokens when captions are encoded on the fly
        "gradient_checkpointing": True,
        "vae_latents": "sample",       # sample (a posterior draw per step, the reference) | mode (posterior mean)
    },
    "lora": {
        "rank": 32,
        "alpha": 8,                    # PEFT default used by the reference: scale alpha/rank = 0.25
        "target_modules": None,        # None: the 12 reference names matched by suffix (PEFT); or a list / regex
        "save_format": "diffusers",    # diffusers | paddlemix | both (final LoRA file)
    },
    "objectives": config_defaults(),   # solver + every objective's own defaults (ppflux_lightning/objectives)
    "train": {
        "output_dir": "outputs/flux_lightning",
        "max_steps": 28652,            # optimizer steps (D and G steps alternate when the adversarial loss is on)
        "batch_size": 1,               # per process
        "grad_accum_steps": 1,
        "seed": 0,
        "lr": 5.0e-6,
        "betas": [0.9, 0.999],
        "weight_decay": 1.0e-3,
        "eps": 1.0e-8,
        "max_grad_norm": 1.0,          # 0 disables clipping
        "lr_schedule": "constant",     # constant | warmup | cosine
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,           # cosine floor as a fraction of lr
        "checkpoint_every": 500,
        "keep_last": 3,                # checkpoints kept (oldest removed)
        "log_every": 10,
        "validate_every": 0,           # 0 disables validation image grids
        "validation_prompts": [],
        "validation_size": 0,          # validation image side; 0 = data.resolution
        "num_workers": 0,              # data loader worker processes
    },
    "data": {
        "type": "laion",               # laion | folder | jsonl | cached (see ppflux_lightning.data)
        "path": None,
        "resolution": 1024,
        "center_crop": True,
        "random_flip": False,
        "caption_key": "blip_caption_en",
    },
}

REQUIRED = ["model.pretrained", "data.path"]
