"""Which optimisation schedule teaches the toy teacher most per sample: retrain only the transformer of a built toy
(same VAE, text encoders and training images as its build) under several batch sizes and learning rates, all on the
same number of training samples, and score each at 50 and 4 Euler steps on the build report's one-object prompts.

    python bench/bench_teacher_schedule.py [--model assets/toy/flux-toy] [--samples 96000]
        [--runs 64:2e-3,32:2e-3,16:2e-3,32:4e-3,32:8e-3,64:8e-3] [--parallel 2] [--out docs/teacher_schedule]
    python bench/bench_teacher_schedule.py --runs 32:4e-3:pipeline,32:4e-3:1.15     # the training sigmas' shift
    python bench/bench_teacher_schedule.py --runs 32:4e-3:1.15:1,32:4e-3:1.15:8 --per-level 96   # captions per image

Each run is `batch:lr`, `batch:lr:mu` or `batch:lr:mu:K`: samples / batch steps, the last 2/15 of them guidance
distillation (the build's share), the training sigmas shifted with `mu` (`pipeline`: the pipeline's dynamic shift for
the token count; default: `TeacherSchedule.sigma_mu`), each training image seen under K captions (default 1:
`BuildSettings.captions_per_image`, `task.caption_variants`), every other setting the build's
(`toy.train_teacher.TeacherSchedule`), seed 0. `--per-level N` also scores N prompts per level of specification
(`task.level_balanced_prompts`).
Each run trains in its own one-process job (`--parallel` jobs at a time, one per core), so runs started together
share the machine's state; the table gives each run's training seconds next to its scores. Writes `<out>.md`,
`<out>.json` and `<out>.png` (teacher@50 samples of the first prompts, a row per run). Roughly 13 minutes per pair
of runs at the default 96000 samples on 2 cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ppflux_lightning  # noqa: E402,F401  (sets the MKL switch before paddle is imported)
from ppflux_lightning.toy.train_teacher import TeacherSchedule, mu_text, parse_mu, train_teacher  # noqa: E402

GUIDANCE_SHARE = 2 / 15  # the build's last steps of guidance distillation, as a share of all steps
SCORE_STEPS = (50, 4)


def parse_runs(text):
    """'64:2e-3,32:4e-3:pipeline:8' -> [(64, 0.002, DEFAULT, 1), (32, 0.004, None, 8)] (batch, lr, training shift
    mu, captions per image)."""
    runs = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) not in (2, 3, 4):
            raise ValueError(item)
        mu = TeacherSchedule.sigma_mu if len(parts) == 2 else parse_mu(parts[2])
        runs.append((int(parts[0]), float(parts[1]), mu, int(parts[3]) if len(parts) == 4 else 1))
        if runs[-1][0] < 1 or runs[-1][1] <= 0 or runs[-1][3] < 1:
            raise ValueError(item)
    return runs


def run_name(batch, lr, mu, captions=1):
    return f"batch {batch}, lr {lr:g}, mu {mu_text(mu)}" + (f", {captions} captions" if captions > 1 else "")


def encode_training_latents(model_dir, path, captions_per_image):
    """The build's training images (BuildSettings defaults) through the folder's VAE, with `captions_per_image`
    captions each, saved once for every run (a run with K captions uses the first K)."""
    import numpy as np

    from ppflux_lightning.pipelines.flux_pipeline import FluxPipeline
    from ppflux_lightning.toy.build import BuildSettings, load_toy_config, training_data
    from ppflux_lightning.toy.train_vae import encode_mean

    settings = BuildSettings(image_size=load_toy_config(model_dir)["image_size"],
                             captions_per_image=captions_per_image)
    images, captions = training_data(settings)
    raw = encode_mean(FluxPipeline.from_pretrained(model_dir).vae, images)
    np.savez(path, raw=raw, captions=np.array(captions).reshape(len(images), -1))


def train_and_score(model_dir, latents_path, batch, lr, mu, captions_per_image, samples, per_level, out_json):
    """One run (in a job of its own): retrain the teacher, then score it at every SCORE_STEPS."""
    import numpy as np
    import paddle

    from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel
    from ppflux_lightning.toy import task
    from ppflux_lightning.toy.build import teacher_inputs
    from ppflux_lightning.toy.metrics import task_scores
    from ppflux_lightning.toy.quickstart import Sampler

    data = np.load(latents_path)
    sampler = Sampler(model_dir, batch_size=32)  # one pipeline: its encoders feed the training, then it samples
    inputs = teacher_inputs(sampler.pipe, data["raw"], data["captions"][:, :captions_per_image].tolist(),
                            sampler.max_len)
    steps = max(2, samples // batch)
    schedule = TeacherSchedule(steps=steps, guidance_steps=max(1, round(steps * GUIDANCE_SHARE)), batch_size=batch,
                               lr=lr, warmup=max(1, min(30, steps // 4)), sigma_mu=mu)
    paddle.seed(schedule.seed)
    model = FluxTransformer2DModel(sampler.pipe.transformer.config)
    start = time.perf_counter()
    teacher, history = train_teacher(model, schedule=schedule, desc=run_name(batch, lr, mu, captions_per_image),
                                     **inputs)
    seconds = time.perf_counter() - start
    sampler.pipe.transformer = teacher
    prompts = one_object_prompts()
    row = {"batch": batch, "lr": lr, "mu": mu, "captions_per_image": captions_per_image, "steps": steps,
           "guidance_steps": schedule.guidance_steps, "train_seconds": round(seconds, 1),
           "final_loss": float(np.mean(history[-50:])), "prompts": len(prompts)}
    for n in SCORE_STEPS:
        images = sampler.sample(prompts, list(range(len(prompts))), n, f"teacher@{n}")[0]
        scores = task_scores(images, prompts)
        row[f"teacher@{n}"] = {k: scores[k] for k in ("validity", "adherence_single", "coverage_tv_color",
                                                      "coverage_tv_shape", "coverage_tv_position")}
        if n == SCORE_STEPS[0]:
            np.save(out_json[:-5] + "-samples.npy", images[:10])
    if per_level:
        row["per_level"] = per_level
        prompts = task.level_balanced_prompts(per_level)
        for n in SCORE_STEPS:
            images = sampler.sample(prompts, list(range(len(prompts))), n, f"teacher@{n}, per level")[0]
            scores = task_scores(images, prompts)
            keys = ["validity"] + [f"{m}_level{k}" for m in ("validity", "adherence") for k in range(4)]
            row[f"levels@{n}"] = {k: scores[k] for k in keys}
    with open(out_json, "w") as f:
        json.dump(row, f)


def one_object_prompts():
    """The one-object prompts of the build report's 384 evaluation prompts."""
    from ppflux_lightning.toy import task

    return [p for p in task.eval_prompts(384) if len(task.parse_caption(p)) == 1]


def markdown(rows, samples, model_dir):
    lines = [f"Teacher schedules on `{model_dir}`, {samples} training samples each "
             f"(`python bench/bench_teacher_schedule.py`), scored on the {rows[0]['prompts']} one-object prompts of "
             "`task.eval_prompts(384)`, seed i for prompt i, guidance 3.5.", "",
             "| batch | lr | training mu | captions per image | steps | train s | validity@50 % | validity@4 % | "
             "adherence@50 % | coverage TV@50 (colour / shape / cell) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["teacher@50"], r["teacher@4"]
        tv = " / ".join("—" if a[f"coverage_tv_{k}"] is None else f"{a[f'coverage_tv_{k}']:.3f}"
                        for k in ("color", "shape", "position"))  # None: no valid image left the attribute open
        lines.append(f"| {r['batch']} | {r['lr']:g} | {mu_text(r['mu'])} | {r.get('captions_per_image', 1)} | "
                     f"{r['steps']} | {r['train_seconds']:.0f} | {a['validity']:.1f} | {b['validity']:.1f} | "
                     f"{a['adherence_single']:.1f} | {tv} |")
    if rows[0].get("per_level"):
        n = rows[0]["per_level"]
        lines += ["", f"The same runs on `task.level_balanced_prompts({n})` ({n} one-object prompts per level of "
                  "specification, seed i for prompt i):", "",
                  "| run | validity@50, level 0 / 1 / 2 / 3 (all) | validity@4, level 0 / 1 / 2 / 3 (all) | "
                  "adherence@50, level 0 / 1 / 2 / 3 |", "|---|---|---|---|"]
        for r in rows:
            cells = []
            for n_steps, measure in ((50, "validity"), (4, "validity"), (50, "adherence")):
                levels = r[f"levels@{n_steps}"]
                values = [levels[f"{measure}_level{k}"] for k in range(4)]
                text = " / ".join("—" if v is None else f"{v:.0f}" for v in values)
                cells.append(text + (f" ({levels['validity']:.1f})" if measure == "validity" else ""))
            lines.append(f"| {run_name(r['batch'], r['lr'], r['mu'], r.get('captions_per_image', 1))} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "toy", "flux-toy"))
    p.add_argument("--samples", type=int, default=96000, help="training samples of every run")
    p.add_argument("--runs", default="64:2e-3,32:2e-3,16:2e-3,32:4e-3,32:8e-3,64:8e-3",
                   help="batch:lr[:mu],... (mu: a number or 'pipeline')")
    p.add_argument("--parallel", type=int, default=2, help="runs trained at once (one core each)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "teacher_schedule"))
    p.add_argument("--per-level", type=int, default=0,
                   help="also score task.level_balanced_prompts(N): N one-object prompts per level of specification")
    p.add_argument("--one", nargs=6, metavar=("LATENTS", "BATCH", "LR", "MU", "K", "JSON"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        latents, batch, lr, mu, k, out_json = a.one
        train_and_score(a.model, latents, int(batch), float(lr), parse_mu(mu), int(k), a.samples, a.per_level,
                        out_json)
        return 0
    try:
        runs = parse_runs(a.runs)
    except ValueError:
        print(f"error: --runs must be batch:lr[:mu[:K]] (positive; mu a number or 'pipeline', K an integer), got "
              f"{a.runs!r}", file=sys.stderr)
        return 2
    if a.samples < 2 * max(r[0] for r in runs) or a.parallel < 1 or a.per_level < 0:
        print(f"error: --samples must cover at least 2 steps of every batch, --parallel be >= 1 and --per-level >= 0, "
              f"got {a.samples} / {a.parallel} / {a.per_level}", file=sys.stderr)
        return 2
    from ppflux_lightning.toy.build import load_toy_config

    try:
        load_toy_config(a.model)
    except (OSError, ValueError) as e:  # missing, or not JSON
        print(f"error: {e}", file=sys.stderr)
        return 2
    import numpy as np

    from ppflux_lightning.toy.quickstart import save_rows_grid

    with tempfile.TemporaryDirectory() as work:
        latents = os.path.join(work, "latents.npz")
        encode_training_latents(a.model, latents, max(r[3] for r in runs))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        jobs = [(*run, os.path.join(work, f"run{i}.json")) for i, run in enumerate(runs)]
        for start in range(0, len(jobs), a.parallel):
            procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--model", a.model, "--samples",
                                       str(a.samples), "--per-level", str(a.per_level), "--one", latents, str(b),
                                       repr(lr), mu_text(mu, exact=True), str(k), path], env=env)
                     for b, lr, mu, k, path in jobs[start:start + a.parallel]]
            if any(proc.wait() for proc in procs):
                print("error: a run failed (its traceback is above)", file=sys.stderr)
                return 1
        rows = []
        for *_, path in jobs:
            with open(path) as f:
                rows.append(json.load(f))
        grid = [(run_name(r["batch"], r["lr"], r["mu"], r["captions_per_image"]), np.load(path[:-5] + "-samples.npy"))
                for r, (*_, path) in zip(rows, jobs)]
    text = markdown(rows, a.samples, os.path.relpath(a.model, ROOT))
    print(text)
    from ppflux_lightning.utils.atomic import atomic_file

    for ext, content in ((".md", text), (".json", json.dumps({"samples": a.samples, "runs": rows}, indent=1))):
        with atomic_file(a.out + ext) as tmp:
            with open(tmp, "w") as f:
                f.write(content)
    save_rows_grid(grid, a.out + ".png", columns=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
