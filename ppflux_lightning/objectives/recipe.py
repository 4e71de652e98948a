"""The FLUX-Lightning recipe: the enabled objectives, which optimizer group trains on which step, and one step's
losses. Groups alternate by step (discriminator on even steps, generator on odd) when both are present."""

import contextlib

from ..utils.errors import ConfigError
from . import adversarial, consistency, dmd, reflow  # noqa: F401  (register the objectives)
from .base import OBJECTIVES, StepContext
from .solver import EulerSolver

GROUP_ORDER = ("discriminator", "generator")


class DistillationRecipe:
    """Builds objectives from the `objectives` config section; `losses(...)` runs one step's forwards."""

    def __init__(self, model, objectives_cfg, solver, adapters_off=None):
        if adapters_off is None:
            from ..lora import lora_disabled as adapters_off
        self.model, self.solver, self.adapters_off = model, solver, adapters_off
        cfg = {k: dict(v) for k, v in objectives_cfg.items() if k != "solver"}
        self.teacher_steps = int(cfg.get("consistency", {}).get("teacher_steps", 1))
        self.objectives = []
        for name, section in cfg.items():
            if section.get("enabled", True):
                self.objectives.extend(OBJECTIVES.get(name).build(model, **section))
        if not any(o.group == "generator" for o in self.objectives):
            raise ConfigError("no generator objective is enabled: enable at least objectives.consistency")
        self.groups = [g for g in GROUP_ORDER if any(o.group == g for o in self.objectives)]

    @classmethod
    def from_config(cls, model, scheduler, objectives_cfg, image_seq_len, adapters_off=None):
        s = objectives_cfg["solver"]
        solver = EulerSolver.from_scheduler(scheduler, image_seq_len, s["num_timesteps"], s["num_phases"])
        return cls(model, objectives_cfg, solver, adapters_off)

    def group_at(self, step):
        return self.groups[step % len(self.groups)]

    def parameters(self, group):
        """Extra trainable parameters of a group's objectives (the D heads), deduplicated."""
        seen, out = set(), []
        for o in self.objectives:
            if o.group == group:
                for p in o.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return out

    def optimizer_settings(self, group):
        out = {}
        for o in self.objectives:
            if o.group == group:
                out.update(o.optimizer_settings())
        return out

    def state_dict(self):
        return {f"{o.name}.{k}": v for o in self.objectives for k, v in o.state_dict().items()}

    def set_state_dict(self, state):
        for o in self.objectives:
            prefix = o.name + "."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if o.state_dict() and not own:
                raise KeyError(f"checkpoint holds no state for objective {o.name!r}")
            o.set_state_dict(own)

    def losses(self, cond, latents, draws, group):
        """Named, weighted losses of `group`'s objectives for one batch (packed latents `[B, S, C]`)."""
        active = [o for o in self.objectives if o.group == group]
        ctx = StepContext(self.model, self.adapters_off, cond, latents, draws, self.solver,
                          train_student=group == "generator", teacher_steps=self.teacher_steps)
        need_target = any(o.needs_target for o in active)
        if ctx.train_student:
            ctx.pred  # noqa: B018  (the gradient-carrying student forward, before requests that read it)
        for stage, adapters in (("teacher", False), ("student", True)):
            requests = ctx.core_requests(stage, need_target)
            for o in active:
                requests.update(o.requests(ctx, stage))
            ctx.run_batched(requests, adapters)
        if need_target:
            ctx.finish_target()
        losses = {}
        for o in active:
            losses.update(o.losses(ctx))
        return losses


@contextlib.contextmanager
def no_adapters(model):
    """An `adapters_off` for a model without LoRA layers (the student is the teacher): does nothing."""
    yield model
