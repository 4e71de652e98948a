"""The FLUX-Lightning recipe: the enabled objectives, which optimizer group trains on which step, and one step's
losses. Groups alternate by step (discriminator on even steps, generator on odd) when both are present.

Everything objective-specific lives in the objective's own module: its config defaults (`config_defaults()`
gathers them for the schema), its random streams, its group and parameters. Adding an objective = one new module
registered in `OBJECTIVES` and imported below.
"""

import contextlib

from ..utils.errors import ConfigError
from . import adversarial, consistency, dmd, reflow  # noqa: F401  (register the objectives)
from . import solver as solver_mod
from .base import CORE_STREAMS, OBJECTIVES, StepContext, sample_draws
from .solver import EulerSolver

GROUP_ORDER = ("discriminator", "generator")
STUDENT_GROUP = "generator"  # the group whose optimizer also trains the student's own parameters (the LoRA)


def config_defaults():
    """The `objectives` config section: the solver's settings and every registered objective's defaults."""
    out = {"solver": dict(solver_mod.DEFAULTS)}
    for name in OBJECTIVES.names():
        out[name] = dict(OBJECTIVES.get(name).defaults)
    return out


class DistillationRecipe:
    """Builds objectives from the `objectives` config section; `losses(...)` runs one step's forwards.

    `student_parameters` are the trainable parameters of the student (the LoRA), trained by the generator group."""

    def __init__(self, model, objectives_cfg, solver, adapters_off=None, student_parameters=()):
        if adapters_off is None:
            from ..lora import lora_disabled as adapters_off
        self.model, self.solver, self.adapters_off = model, solver, adapters_off
        self.student_parameters = list(student_parameters)
        self.objectives, self.streams = [], dict(CORE_STREAMS)
        for name, section in objectives_cfg.items():
            if name == "solver":
                continue
            cls = OBJECTIVES.get(name)
            if not cls.settings(name, dict(section))["enabled"]:
                continue
            self.objectives.extend(cls.build(model, name, **dict(section)))
            self.streams.update({f"{name}.{k}": kind for k, kind in cls.streams.items()})
        if not any(o.group == STUDENT_GROUP for o in self.objectives):
            raise ConfigError("no generator objective is enabled: enable at least objectives.consistency")
        self.groups = [g for g in GROUP_ORDER if any(o.group == g for o in self.objectives)]
        self.teacher_steps = max([o.teacher_steps for o in self.objectives if o.needs_target] or [1])

    @classmethod
    def from_config(cls, model, scheduler, objectives_cfg, image_seq_len, adapters_off=None, student_parameters=()):
        """The recipe with the reference solver for a scheduler at the training resolution (`image_seq_len`)."""
        s = {**solver_mod.DEFAULTS, **dict(objectives_cfg.get("solver", {}))}
        solver = EulerSolver.from_scheduler(scheduler, image_seq_len, s["num_timesteps"], s["num_phases"])
        return cls(model, objectives_cfg, solver, adapters_off, student_parameters)

    def group_at(self, step):
        return self.groups[step % len(self.groups)]

    def parameters(self, group):
        """Trainable parameters of a group: the student's for the generator group, plus its objectives' own (the D
        heads), deduplicated."""
        seen, out = set(), []
        own = self.student_parameters if group == STUDENT_GROUP else []
        for p in own + [p for o in self.objectives if o.group == group for p in o.parameters()]:
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

    def names(self):
        """The enabled objectives' names (recorded in checkpoints)."""
        return [o.name for o in self.objectives]

    def state_dict(self):
        return {f"{o.name}.{k}": v for o in self.objectives for k, v in o.state_dict().items()}

    def set_state_dict(self, state):
        for o in self.objectives:
            prefix = o.name + "."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if o.state_dict() and not own:
                raise KeyError(f"checkpoint holds no state for objective {o.name!r}")
            o.set_state_dict(own)

    def draws(self, seed, step, sample_ids, shape):
        """This recipe's per-sample random numbers (core streams + the enabled objectives')."""
        return sample_draws(seed, step, sample_ids, shape, self.streams)

    def losses(self, cond, latents, draws, group):
        """Named, weighted losses of `group`'s objectives for one batch (packed latents `[B, S, C]`)."""
        active = [o for o in self.objectives if o.group == group]
        ctx = StepContext(self.model, self.adapters_off, cond, latents, draws, self.solver,
                          train_student=group == STUDENT_GROUP, teacher_steps=self.teacher_steps)
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
