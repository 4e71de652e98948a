"""How a built toy teacher's samples depend on the sampler: one-object validity per level of specification,
adherence, coverage with the drawn distribution of every open attribute, and why the invalid images fail, for every
combination of step count, guidance scale and time shift, on the build report's one-object prompts.

    python bench/bench_toy_sampler.py [--model assets/toy/flux-toy] [--steps 4,50] [--guidance 3.5]
        [--mu pipeline] [--prompts 384 | --per-level 96] [--out outputs/bench_toy_sampler]

`--mu` takes `pipeline` (the scheduler's dynamic shift for the token count: 0.46 for the toy's 36 tokens) or numbers
(a fixed shift: FLUX.1 uses 1.15 at 1024 px). Prompt i of `task.eval_prompts(--prompts)` starts from seed i, as in
the build report, whose teacher@N rows this repeats; only its one-object prompts are sampled. `--per-level N` samples
`task.level_balanced_prompts(N)` instead (N prompts at each level of specification, seeds 0..4N-1), which measures
level 0 ("a shape", 5 of the 288) and level 3 as well as levels 1-2. Failure reasons are
`toy.detector.Reading.failures`: count (not one object), shape, colour, size, ghost (stray or ambiguous pixels).
Writes `<out>/results.md`, `results.json` and `grid.png` (the first 10 images of every setting, one row each).
"""

import argparse
import collections
import dataclasses
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ppflux_lightning  # noqa: E402,F401  (sets the MKL switch before paddle is imported)

REASONS = ("count", "cell", "shape", "colour", "size", "ghost")


def parse_list(text, kind, what):
    """'4,50' -> [4, 50]; ValueError naming the option otherwise. kind 'mu': numbers or 'pipeline' (None)."""
    from ppflux_lightning.toy.train_teacher import parse_mu

    convert = parse_mu if kind == "mu" else kind
    try:
        return [convert(v) for v in text.split(",")]
    except ValueError:
        expected = "numbers or 'pipeline'" if kind == "mu" else f"{kind.__name__} values"
        raise ValueError(f"--{what} must be a comma-separated list of {expected}, got {text!r}") from None


def with_fixed_mu(scheduler, mu):
    """A copy of a dynamic-shift scheduler whose shift is `mu` at every token count (None: the scheduler itself)."""
    if mu is None:
        return scheduler
    config = dataclasses.replace(scheduler.config, use_dynamic_shifting=True, base_shift=mu, max_shift=mu)
    return type(scheduler)(config)


def score(images, prompts):
    """task_scores plus the open attributes' drawn values (valid images) and the invalid images' failure reasons."""
    from ppflux_lightning.toy import detector, task
    from ppflux_lightning.toy.metrics import ATTRIBUTE_VALUES, open_values, task_scores

    readings = [detector.read(image) for image in images]
    row = task_scores(images, prompts, readings)
    failures = [r.failures(1) for r in readings]  # every prompt here asks for one object
    drawn = open_values(readings, [task.parse_caption(p) for p in prompts], [not f for f in failures])
    row["drawn"] = {a: {v: drawn[a].count(v) for v in values} for a, values in ATTRIBUTE_VALUES.items()}
    reasons = collections.Counter(reason for f in failures for reason in f)
    row["failures"] = {r: reasons[r] for r in REASONS}
    row["invalid"] = sum(1 for f in failures if f)
    return row


def label(setting):
    steps, guidance, mu = setting
    from ppflux_lightning.toy.train_teacher import mu_text

    return f"{steps} steps, g {guidance:g}, mu {mu_text(mu)}"


def markdown(result):
    source = (f"`task.level_balanced_prompts({result['per_level']})`, seeds 0-{result['prompts'] - 1}"
              if result.get("per_level") else
              f"one-object prompts of `task.eval_prompts({result['eval_prompts']})`, seed i for prompt i")
    lines = [f"Toy sampler settings on `{result['model']}` (`{result['command']}`): {result['prompts']} {source}. "
             "Validity and adherence in %; coverage TV over the valid images whose prompt leaves the attribute open "
             "(drawn counts in `results.json`); failures count the invalid images by reason (an image can have "
             "several).", "",
             "| setting | validity (level 0 / 1 / 2 / 3) | adherence (level 0 / 1 / 2 / 3) | "
             "coverage TV (colour / shape / cell) | invalid: " + " / ".join(REASONS) + " |", "|---|---|---|---|---|"]

    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    for row in result["rows"]:
        levels = " / ".join(num(row[f"validity_level{k}"], ".0f") for k in range(4))
        adherence = " / ".join(num(row[f"adherence_level{k}"], ".0f") for k in range(4))
        tv = " / ".join(num(row[f"coverage_tv_{a}"], ".3f") for a in ("color", "shape", "position"))
        fails = " / ".join(str(row["failures"][r]) for r in REASONS)
        lines.append(f"| {row['setting']} | {row['validity']:.1f} ({levels}) | {row['adherence']:.1f} ({adherence}) "
                     f"| {tv} | {row['invalid']}: {fails} |")
    lines += ["", "Drawn values of the open attributes (valid images):", ""]
    for row in result["rows"]:
        drawn = "; ".join(f"{a}: " + ", ".join(f"{v} {n}" for v, n in counts.items())
                          for a, counts in row["drawn"].items())
        lines.append(f"- {row['setting']}: {drawn}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "toy", "flux-toy"))
    p.add_argument("--steps", default="4,50", help="Euler step counts, comma-separated")
    p.add_argument("--guidance", default="3.5", help="guidance scales, comma-separated")
    p.add_argument("--mu", default="pipeline", help="time shifts: 'pipeline' or numbers, comma-separated")
    p.add_argument("--prompts", type=int, default=384, help="size of the task.eval_prompts set (one-object subset)")
    p.add_argument("--per-level", type=int, default=None,
                   help="sample task.level_balanced_prompts(N) instead: N one-object prompts per level")
    p.add_argument("--out", default=os.path.join(ROOT, "outputs", "bench_toy_sampler"))
    a = p.parse_args(argv)
    try:
        steps = parse_list(a.steps, int, "steps")
        guidance = parse_list(a.guidance, float, "guidance")
        mus = parse_list(a.mu, "mu", "mu")
        if min(steps) < 1 or a.prompts < 1 or (a.per_level is not None and a.per_level < 1):
            raise ValueError(f"--steps, --prompts and --per-level must be >= 1, got {a.steps!r} / {a.prompts} / "
                             f"{a.per_level}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ppflux_lightning.toy import task
    from ppflux_lightning.toy.build import load_toy_config

    try:
        load_toy_config(a.model)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ppflux_lightning.toy.quickstart import Sampler, save_rows_grid
    from ppflux_lightning.utils.atomic import atomic_file

    if a.per_level is not None:
        prompts = task.level_balanced_prompts(a.per_level)
        seeds = list(range(len(prompts)))
    else:
        everything = task.eval_prompts(a.prompts)
        seeds = [i for i, prompt in enumerate(everything) if len(task.parse_caption(prompt)) == 1]
        prompts = [everything[i] for i in seeds]
    sampler = Sampler(a.model, batch_size=48)
    scheduler = sampler.pipe.scheduler
    rows, grid = [], []
    for mu in mus:
        sampler.pipe.scheduler = with_fixed_mu(scheduler, mu)
        for g in guidance:
            sampler.guidance = g
            for n in steps:
                name = label((n, g, mu))
                images = sampler.sample(prompts, seeds, n, name)[0]
                rows.append({"setting": name, "steps": n, "guidance": g, "mu": mu, **score(images, prompts)})
                grid.append((name, images[:10]))
                print(f"{name}: one-object validity {rows[-1]['validity']:.1f} %", flush=True)
    result = {"model": os.path.relpath(a.model, ROOT), "command": "python " + " ".join(sys.argv),
              "eval_prompts": a.prompts, "per_level": a.per_level, "prompts": len(prompts), "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    for name, content in (("results.md", markdown(result)), ("results.json", json.dumps(result, indent=1))):
        with atomic_file(os.path.join(a.out, name)) as tmp, open(tmp, "w") as f:
            f.write(content)
    save_rows_grid(grid, os.path.join(a.out, "grid.png"), columns=10, label_width=200)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
