"""The FLUX-Lightning ablation on the toy world: which losses buy what at 4 steps.

    python bench/bench_distill.py [--steps 200] [--seeds 0,1,2] [--quick] [--out outputs/bench_distill]

Rows: teacher@50 (reference; its FID is the floor: teacher@50 with other seeds), teacher@4 and @8 Euler steps,
then 4-step students: consistency only, +adversarial, +adversarial+DMD, full FLUX-Lightning (+reflow), each trained
with every seed (mean and spread shown). Columns: the toy task's exact validity, one-object adherence and coverage
(`toy.metrics`), FID-to-teacher, PSNR vs teacher, seconds per image.
Resumable: finished runs (same config, same model and data files) and their cached samples are reused. Writes
`results.md`, `results.json` and `grid.png` under `--out` after every finished run, so a partial run still leaves a
table.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import ppflux_lightning  # noqa: E402,F401  (before paddle: sets the MKL switch)
from ppflux_lightning.toy import quickstart as qs  # noqa: E402
from ppflux_lightning.toy.features import load_task_features  # noqa: E402
from ppflux_lightning.toy.metrics import task_scores  # noqa: E402
from ppflux_lightning.utils.atomic import atomic_file  # noqa: E402

ABLATIONS = (  # (row name, configs/toy file)
    ("consistency only", "consistency_only"),
    ("+adversarial", "consistency_adv"),
    ("+adversarial+DMD", "consistency_adv_dmd"),
    ("full FLUX-Lightning (+reflow)", "full"),
)
SUMMARY_KEYS = ("validity", "validity_single", "adherence", "adherence_single", "adherence_level0",
                "adherence_level1", "adherence_level2", "adherence_level3", "coverage_tv", "coverage_tv_color",
                "coverage_tv_shape", "coverage_tv_position", "fid_to_teacher", "psnr_vs_teacher")
FLOOR_SEED_OFFSET = 10_000  # teacher@50 floor: the same prompts with seeds shifted by this


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=qs.DEFAULT_MODEL, help="toy pipeline folder (built when missing)")
    p.add_argument("--out", default=os.path.join("outputs", "bench_distill"))
    p.add_argument("--steps", type=int, default=200, help="generator steps per student (default 200)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated (default 0,1,2)")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--eval-prompts", type=int, default=384)
    p.add_argument("--ablations", default=",".join(n for _, n in ABLATIONS),
                   help="comma-separated configs/toy names to train (default: all four)")
    p.add_argument("--features", default="", help="FID feature network folder (default <out>/task_features)")
    p.add_argument("--feature-steps", type=int, default=400, help="training steps of the feature network if absent")
    p.add_argument("--quick", action="store_true", help="short schedule: 60 steps, 1000 images, 64 prompts")
    p.add_argument("--timing-repeats", type=int, default=3, help="interleaved timing rounds at the end")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every student (repeatable), e.g. objectives.adversarial.weight=0.01")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.train_images, args.eval_prompts = 60, 1000, 64
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    known = {n for _, n in ABLATIONS}
    args.ablations = [a for a in args.ablations.split(",") if a.strip()]
    unknown = [a for a in args.ablations if a not in known]
    if unknown or not args.seeds:
        p.error(f"unknown ablation {unknown[0]!r} (expected {sorted(known)})" if unknown else "no --seeds given")
    return args


class Bench:
    """Shared state of one bench run: the sampler, feature network, prompts and the teacher reference."""

    def __init__(self, args):
        self.args = args
        self.model = qs.ensure_toy_model(args.model)
        image_size, _, _ = qs.toy_settings(self.model)
        self.data = qs.write_train_data(os.path.join(args.out, "train_data"), args.train_images, image_size)
        self.features = load_task_features(args.features or qs.default_features_dir(self.model, args.out),
                                           args.feature_steps, image_size=image_size)
        self.prompts, self.seeds = qs.eval_prompt_set(args.eval_prompts)
        self.sample_key = json.dumps([self.prompts, self.seeds, qs.folder_fingerprint(self.model)])
        self.sampler = qs.Sampler(self.model)
        self.rows, self.grid = {}, []

    def cached_samples(self, path, make):
        """Images from `path` (npz) when they were sampled from the same model files for the same prompts and seeds,
        else `make()` and save."""
        if os.path.isfile(path):
            with np.load(path) as f:
                if str(f["key"]) == self.sample_key:
                    return f["images"], [float(x) for x in f["seconds"]]
        images, seconds = make()
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, seconds=np.asarray(seconds), key=np.asarray(self.sample_key))
        return images, seconds

    def teacher_rows(self):
        from ppflux_lightning.eval.fid import extract_features

        out = os.path.join(self.args.out, "samples")
        os.makedirs(out, exist_ok=True)
        s = self.sampler
        t50, sec50 = self.cached_samples(os.path.join(out, "teacher50.npz"),
                                         lambda: s.sample(self.prompts, self.seeds, 50, "teacher@50"))
        floor, _ = self.cached_samples(
            os.path.join(out, "teacher50_floor.npz"),
            lambda: s.sample(self.prompts, [x + FLOOR_SEED_OFFSET for x in self.seeds], 50, "teacher@50 floor"))
        self.reference, self.ref_features = t50, extract_features(t50, self.features)
        ref_row = qs.score_images(floor, self.prompts, t50, self.features, self.ref_features)
        ref_row.update(**task_scores(t50, self.prompts), psnr_vs_teacher=None)
        self.add_row("teacher@50", [ref_row], sec50, t50)
        for steps in (4, 8):
            images, sec = self.cached_samples(
                os.path.join(out, f"teacher{steps}.npz"),
                lambda n=steps: s.sample(self.prompts, self.seeds, n, f"teacher@{n}"))
            self.add_row(f"teacher@{steps}", [self.score(images)], sec, images)

    def score(self, images):
        return qs.score_images(images, self.prompts, self.reference, self.features, self.ref_features)

    def add_row(self, name, runs, seconds, images=None, meta=None):
        self.rows[name] = {"runs": runs, "seconds_per_image": float(np.median(seconds)), **(meta or {})}
        if images is not None and name not in dict(self.grid):
            self.grid.append((name, images))

    def student(self, row, config_name, seed):
        a = self.args
        run_dir = os.path.join(a.out, "runs", f"{config_name}-seed{seed}")
        cfg = qs.student_config(os.path.join(qs.CONFIG_DIR, f"{config_name}.yaml"), self.model, self.data, run_dir,
                                a.steps, seed, a.override)
        lora = qs.train_student(cfg)
        with open(os.path.join(run_dir, qs.RUN_MARKER)) as f:
            train_seconds = json.load(f).get("train_seconds")
        images, sec = self.cached_samples(
            os.path.join(run_dir, f"samples-{os.path.getmtime(lora):.0f}.npz"),
            lambda: self.sampler.sample_student(lora, self.prompts, self.seeds, 4, f"{row} s{seed}"))
        previous = self.rows.get(row, {"runs": [], "train_seconds": []})
        runs = previous["runs"] + [{**self.score(images), "seed": seed}]
        self.add_row(row, runs, sec, images, {"train_seconds": previous["train_seconds"] + [train_seconds],
                                              "optimizer_steps": cfg.train.max_steps})

    def interleaved_timing(self):
        """Seconds per image of every row again, round-robin on one batch, so all rows share the machine's load."""
        a, s = self.args, self.sampler
        batch = self.prompts[:s.batch_size], self.seeds[:s.batch_size]
        samples = {name: [] for name in self.rows}
        for _ in range(a.timing_repeats):
            for name in self.rows:
                if name.startswith("teacher@"):
                    samples[name] += s.sample(*batch, int(name.split("@")[1]), f"timing {name}")[1]
                else:
                    config = dict((r, c) for r, c in ABLATIONS)[name]
                    lora = os.path.join(a.out, "runs", f"{config}-seed{a.seeds[0]}", qs.FINAL_LORA)
                    samples[name] += s.sample_student(lora, *batch, 4, f"timing {name}")[1]
        for name, values in samples.items():
            self.rows[name]["seconds_per_image"] = float(np.median(values))
        return True

    def write(self, finished, timed=False):
        a = self.args
        result = {"model": self.model, "steps": a.steps, "seeds": a.seeds, "overrides": a.override,
                  "train_images": a.train_images,
                  "eval_prompts": len(self.prompts), "finished_runs": finished, "interleaved_timing": timed,
                  "rows": {name: {**row, **summarize(row["runs"])} for name, row in self.rows.items()}}
        with atomic_file(os.path.join(a.out, "results.json")) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        with atomic_file(os.path.join(a.out, "results.md")) as tmp, open(tmp, "w") as f:
            f.write(markdown(result, " ".join(sys.argv)))
        qs.save_rows_grid(self.grid, os.path.join(a.out, "grid.png"), columns=8, label_width=180)
        return result


def summarize(runs):
    """Mean and half-range over seeds of every metric."""
    out = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
            out[key + "_spread"] = float((max(values) - min(values)) / 2) if len(values) > 1 else None
    return out


def cell(row, key, digits):
    if key not in row:
        return "—"
    spread = row.get(key + "_spread")
    text = f"{row[key]:.{digits}f}"
    return text + (f" ± {spread:.{digits}f}" if spread is not None else "")


def markdown(result, command):
    rows = result["rows"]
    base = rows["teacher@50"]["seconds_per_image"]
    lines = [
        f"# Distillation ablation on the toy world ({result['steps']} generator steps, seeds {result['seeds']})", "",
        f"Command: `{command}`", "",
        f"{result['eval_prompts']} evaluation prompts (`toy.task.eval_prompts`), one seed each. Validity (all "
        "prompts and one-object prompts), one-object adherence and coverage TV (largest over colour, shape and cell; "
        "0 = uniform like the data) are read by the task's exact detector (`toy.metrics`). FID-to-teacher and PSNR "
        "are against teacher@50 images of the same prompts and seeds; the teacher@50 row's FID is teacher@50 with "
        "other seeds (FID's sampling noise at this sample size; rows sampled from the reference's seeds can go below "
        "it). Students are sampled at 4 steps "
        f"with the LoRA fused. `±` is half the range over training seeds ({len(result['seeds'])} seeds). Finished "
        f"training runs: {result['finished_runs']}. Overrides: {result['overrides'] or 'none'}.", "",
        "| row | validity % | one-object validity % | one-object adherence % | coverage TV | FID-to-teacher "
        "| PSNR vs teacher (dB) | s / image | speed vs teacher@50 | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {cell(row, 'validity', 1)} | {cell(row, 'validity_single', 1)} | "
                     f"{cell(row, 'adherence_single', 1)} | "
                     f"{cell(row, 'coverage_tv', 3)} | {cell(row, 'fid_to_teacher', 2)} | "
                     f"{cell(row, 'psnr_vs_teacher', 2)} | {row['seconds_per_image']:.4f} | "
                     f"{base / row['seconds_per_image']:.1f}x | {len(row['runs'])} |")
    timing = ("re-measured round-robin at the end of the run" if result["interleaved_timing"]
              else "measured while each row was sampled")
    lines += ["", f"Seconds per image: medians over batches of 16, {timing}. The machine was shared with other jobs: "
              "compare ratios, not absolute times.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    bench = Bench(args)
    bench.teacher_rows()
    bench.write([])
    finished = []
    names = dict((c, r) for r, c in ABLATIONS)
    for seed in args.seeds:  # every ablation at the first seed first: a cut-short run still fills every row
        for config_name in [c for _, c in ABLATIONS if c in args.ablations]:
            bench.student(names[config_name], config_name, seed)
            finished.append(f"{config_name}-seed{seed}")
            bench.write(finished)
    timed = bench.interleaved_timing() if args.timing_repeats > 0 else False
    result = bench.write(finished, timed)
    with open(os.path.join(args.out, "results.md")) as f:
        print(f.read())
    print(f"bench_distill: {len(finished)} runs in {time.time() - started:.0f} s; "
          f"tables in {args.out}/results.md, results.json, grid.png")
    return result


if __name__ == "__main__":
    main()
