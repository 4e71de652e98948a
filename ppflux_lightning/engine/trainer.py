"""The training engine: data, model + LoRA, the objectives' recipe, two optimizer groups, checkpoints, logging.

One optimizer step = `grad_accum_steps` micro-batches of `batch_size * world_size` samples for the group the recipe
picks for this step. The engine knows nothing about individual objectives: it sums the losses they return.
Per-sample randomness comes from (seed, step, global sample position), so N processes reproduce one process.
"""

import functools
import math
import os

import numpy as np
import paddle
import yaml
from tqdm import tqdm

from .. import lora
from ..data.loader import load_batches
from ..data.registry import DATASETS
from ..data.sampler import GlobalBatchSampler
from ..models.flux_transformer import FluxTransformer2DModel
from ..objectives import GAUSSIAN, DistillationRecipe, sample_draws
from ..objectives.recipe import RECIPE_CHANGES, RECIPE_VERSION
from ..schedulers.flow_match import FlowMatchEulerScheduler
from ..utils import device
from ..utils.atomic import atomic_file, write_marker
from ..utils.errors import ConfigError
from . import checkpoint as ckpt
from . import distributed as dist
from .batch import BatchEncoder, collate, vae_scale_factor
from .logging import TrainLogger, logger
from .optim import adamw, clip_grad_norm, lr_factor
from .schema import REQUIRED

FINAL_LORA = "pytorch_lora_weights.safetensors"
STUDENT = "student"  # the trained adapter's name (extra frozen adapters are extra_0, extra_1, ...)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the run stopped before applying that update."""


def resolve_dtype(name):
    """`auto` -> bfloat16 on a GPU with native bf16 (compute capability >= 8), else float32."""
    return device.resolve_dtype(name, "model.dtype", allowed=("auto", "float32", "bfloat16"))


def check_required(cfg):
    for key in REQUIRED:
        section, name = key.split(".")
        if cfg[section][name] in (None, ""):
            raise ConfigError(f"config key {key!r} must be set (e.g. -o {key}=...)")
    if not os.path.isdir(cfg.model.pretrained):
        raise FileNotFoundError(f"model.pretrained folder not found: {cfg.model.pretrained!r}")
    if not os.path.exists(cfg.data.path):
        raise FileNotFoundError(f"data.path not found: {cfg.data.path!r}")


class Trainer:
    """`Trainer(cfg, resume=None).train()`; `cfg` is a validated config (see `engine.schema`)."""

    def __init__(self, cfg, resume=None, config_text=None):
        check_required(cfg)
        self.cfg, self.config_text = cfg, config_text
        self.rank, self.world = dist.init()
        t = cfg.train
        self.accum, self.batch_size = int(t.grad_accum_steps), int(t.batch_size)
        if self.accum < 1 or self.batch_size < 1:
            raise ConfigError(f"train.batch_size and train.grad_accum_steps must be >= 1, got {t.batch_size}, "
                              f"{t.grad_accum_steps}")
        paddle.seed(int(t.seed))  # LoRA and D-head initialisation: identical on every rank
        self.dtype = resolve_dtype(cfg.model.dtype)

        model = FluxTransformer2DModel.from_pretrained(cfg.model.pretrained, dtype=self.dtype, subfolder="transformer")
        # Frozen extra adapters stay on in the teacher (base + extras); only the student adapter trains and is saved.
        extras = lora.load_frozen_adapters(model, cfg.model.extra_loras)
        lora.add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, dtype="float32",
                      adapter_name=STUDENT)  # fmt: skip
        lora.set_adapters(model, [*extras, STUDENT], [*extras.values(), 1.0])
        model.enable_gradient_checkpointing(bool(cfg.model.gradient_checkpointing))
        model.train()
        self.model = model
        scheduler = FlowMatchEulerScheduler.from_pretrained(cfg.model.pretrained, subfolder="scheduler")
        patch = vae_scale_factor(cfg.model.pretrained) * 2
        # the teacher: the base plus any frozen extra adapters, with the student adapter off
        adapters_off = functools.partial(lora.lora_disabled, adapter_names=[STUDENT])
        self.recipe = DistillationRecipe.from_config(model, scheduler, cfg.objectives,
                                                     (cfg.data.resolution // patch) ** 2, adapters_off,
                                                     lora.lora_parameters(model, [STUDENT]))
        self.encoder = BatchEncoder(cfg.model.pretrained, model, cfg.model.guidance, cfg.model.max_sequence_length,
                                    cfg.model.vae_latents)

        self.params, self.optimizers = {}, {}
        for group in self.recipe.groups:
            params = self.recipe.parameters(group)
            settings = {"lr": t.lr, "betas": t.betas, "weight_decay": t.weight_decay,
                        **self.recipe.optimizer_settings(group)}
            self.params[group] = params
            self.optimizers[group] = adamw(params, settings["lr"], settings["betas"], settings["weight_decay"], t.eps)
            self.optimizers[group].base_lr = float(settings["lr"])

        data = {k: v for k, v in cfg.data.items()}
        self.dataset = DATASETS.build(data, seed=int(t.seed))
        self.sampler = GlobalBatchSampler(len(self.dataset), self.batch_size, self.world, self.rank, seed=int(t.seed))
        self.step = 0
        self.log = TrainLogger(os.path.join(t.output_dir, "logs"), enabled=dist.is_main())
        self.skipped = 0
        path = ckpt.resolve_resume(t.output_dir, resume)
        if path is not None:
            self.load(path)

    # ------------------------------------------------------------------ data
    def micro_batches(self, start):
        """Yield (micro-step index, batch) from micro-step `start` on, across epochs."""
        per_epoch = self.sampler.steps_per_epoch
        micro = start
        while True:
            epoch, offset = divmod(micro, per_epoch)
            self.sampler.set_epoch(epoch, offset)
            for batch in load_batches(self.dataset, self.sampler, collate, self.cfg.train.num_workers):
                yield micro, batch
                micro += 1

    def sample_ids(self, micro):
        """Global positions of this rank's samples in micro-step `micro` (the draws' seeds)."""
        first = micro * self.batch_size * self.world + self.rank * self.batch_size
        return list(range(first, first + self.batch_size))

    def posterior_noise(self, sample_ids, shape):
        """Per-sample Gaussians for the VAE posterior draw (seeded like every other draw of the step)."""
        return sample_draws(self.cfg.train.seed, self.step, sample_ids, shape, {"vae": GAUSSIAN})["vae"]

    # ------------------------------------------------------------------ one step
    def train_step(self, batches):
        """One optimizer step for the group of `self.step`; returns {name: 0-d tensor} for logging."""
        group = self.recipe.group_at(self.step)
        totals = {}
        loss_sum = paddle.zeros([], dtype="float32")
        for micro, batch in batches:
            ids = self.sample_ids(micro)
            latents, cond = self.encoder.encode(batch, functools.partial(self.posterior_noise, ids))
            draws = self.recipe.draws(self.cfg.train.seed, self.step, ids, latents.shape[1:])
            losses = self.recipe.losses(cond, latents, draws, group)
            total = paddle.add_n(list(losses.values())) / self.accum
            total.backward()
            loss_sum = loss_sum + total.detach()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.detach() / self.accum
            self.skipped += int(np.sum(batch.get("skipped", 0)))
        params = self.params[group]
        loss_sum = dist.all_reduce_mean(params, loss_sum)
        if not math.isfinite(float(loss_sum)):
            self.zero_grad()
            raise TrainingDiverged(
                f"loss became {float(loss_sum)} at step {self.step} ({group} step; losses "
                f"{ {k: float(v) for k, v in totals.items()} }); the last checkpoint in "
                f"{self.cfg.train.output_dir!r} is intact")
        norm = clip_grad_norm(params, self.cfg.train.max_grad_norm)
        opt = self.optimizers[group]
        t = self.cfg.train
        lr = opt.base_lr * lr_factor(self.step, t.lr_schedule, t.warmup_steps, t.max_steps, t.min_lr_ratio)
        opt.set_lr(lr)
        opt.step()
        self.zero_grad()
        check_finite_parameters(params, self.step, group, self.cfg.train.output_dir)
        self.step += 1
        return {**totals, f"lr_{group}": lr, f"grad_norm_{group}": norm}

    def zero_grad(self):
        for params in self.params.values():
            for p in params:
                p.clear_gradient(set_to_zero=False)

    def train(self):
        t = self.cfg.train
        if dist.is_main():
            os.makedirs(t.output_dir, exist_ok=True)
            write_marker(t.output_dir, "training")
            if self.config_text is not None:
                with atomic_file(os.path.join(t.output_dir, "config.yaml")) as tmp:
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(self.config_text)
        stream = self.micro_batches(self.step * self.accum)
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not dist.is_main(), desc="train")
        history = []
        try:
            while self.step < t.max_steps:
                logs = self.train_step([next(stream) for _ in range(self.accum)])
                history.append({k: float(v) for k, v in logs.items() if not k.startswith(("lr_", "grad_norm_"))})
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    values = {k: float(v) for k, v in logs.items()}
                    values["skipped_records"] = self.skipped
                    self.log.scalars(self.step, values)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if not k.startswith("lr_")})
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
                if t.validate_every and self.step % t.validate_every == 0:
                    self.validate()
        finally:
            bar.close()
        if self.step % max(1, t.checkpoint_every) != 0 or not t.checkpoint_every:
            self.save()
        self.save_final_lora()
        self.log.close()
        return history

    # ------------------------------------------------------------------ state
    def save(self):
        """Checkpoint `checkpoint-<step>` (rank 0), then prune to the newest `keep_last`."""
        dist.barrier()
        if dist.is_main():
            tensors = {"lora": lora.lora_state_dict(self.model, STUDENT), "objectives": self.recipe.state_dict()}
            for group, opt in self.optimizers.items():
                tensors[f"optimizer-{group}"] = ckpt.optimizer_state(opt, self.params[group])
            tensors = {k: v for k, v in tensors.items() if v}
            state = {"step": self.step, "seed": self.cfg.train.seed, "world_size": self.world,
                     "groups": self.recipe.groups, "skipped_records": self.skipped,
                     "recipe_version": RECIPE_VERSION, "objectives": self.recipe.names()}
            path = ckpt.checkpoint_path(self.cfg.train.output_dir, self.step)
            ckpt.save_checkpoint(path, tensors, state, self.config_text)
            ckpt.prune_checkpoints(self.cfg.train.output_dir, self.cfg.train.keep_last)
            logger.info("saved %s", path)
        dist.barrier()

    def load(self, path):
        state, tensors = ckpt.load_checkpoint(path)
        shapes = {k: v.shape for k, v in lora.lora_state_dict(self.model, STUDENT).items()}
        ckpt.check_resumable(path, state, tensors, shapes, self.recipe.names(), RECIPE_VERSION, RECIPE_CHANGES)
        lora.set_lora_state_dict(self.model, tensors["lora"], STUDENT)
        self.recipe.set_state_dict(tensors.get("objectives", {}))
        for group, opt in self.optimizers.items():
            if f"optimizer-{group}" in tensors:
                ckpt.load_optimizer_state(opt, self.params[group], tensors[f"optimizer-{group}"])
        self.step, self.skipped = int(state["step"]), int(state.get("skipped_records", 0))
        logger.info("resumed from %s at step %d", path, self.step)

    def save_final_lora(self):
        if not dist.is_main():
            return
        out = self.cfg.train.output_dir
        fmt = self.cfg.lora.save_format
        if fmt not in ("diffusers", "paddlemix", "both"):
            raise ConfigError(f"lora.save_format must be diffusers, paddlemix or both, got {fmt!r}")
        from ..lora.formats import PADDLEMIX_WEIGHT_NAME, save_lora_weights

        if fmt in ("diffusers", "both"):
            save_lora_weights(self.model, os.path.join(out, FINAL_LORA), "diffusers", STUDENT)
        if fmt in ("paddlemix", "both"):
            save_lora_weights(self.model, os.path.join(out, PADDLEMIX_WEIGHT_NAME), "paddlemix", STUDENT)

    def validate(self):
        """Sample the validation prompts with the current LoRA and log an image grid (rank 0, needs a pipeline)."""
        prompts = list(self.cfg.train.validation_prompts)
        if not prompts or not dist.is_main():
            return
        size = self.cfg.train.validation_size or self.cfg.data.resolution
        try:
            pipe = self.encoder.pipe
        except FileNotFoundError as e:  # e.g. a transformer-only folder trained on cached embeddings
            logger.warning("validation disabled: %s", e)
            self.cfg.train.validate_every = 0
            return
        self.model.eval()
        try:
            images = pipe(prompts, height=size, width=size, num_inference_steps=self.recipe.solver.num_phases,
                          guidance_scale=self.cfg.model.guidance, seed=int(self.cfg.train.seed),
                          max_sequence_length=self.cfg.model.max_sequence_length, output_type="np").images
        finally:
            self.model.train()
        self.log.images(self.step, "validation", [(np.clip(im, 0, 1) * 255).astype(np.uint8) for im in images])


def check_finite_parameters(params, step, group, output_dir):
    """Stop (TrainingDiverged) when an update made a trained parameter NaN or inf; the checkpoints on disk predate
    it. One device sync: the sum of absolute values is finite only when every value is."""
    if not params:
        return
    total = paddle.add_n([p.detach().astype("float32").abs().sum() for p in params])
    if not math.isfinite(float(total)):
        bad = next((p.name for p in params if not bool(paddle.isfinite(p.detach().astype("float32")).all())),
                   "a trained parameter")
        raise TrainingDiverged(f"parameter {bad!r} became NaN or inf at step {step} ({group} step; learning rate or "
                               f"data blew up); stopped, the last checkpoint in {output_dir!r} is intact")


def dump_config(cfg):
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
