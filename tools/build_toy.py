"""Build the toy FLUX (`python tools/build_toy.py [--out assets/toy/flux-toy] [--quick] [--seed 0] [--nproc 2]`).

Trains the toy VAE and teacher on the synthetic shapes task (`ppflux_lightning.toy.task`) and writes a
diffusers-layout FLUX folder, a sample grid and a JSON build report. `--nproc N` runs the training steps data-parallel
in N CPU processes through `paddle.distributed.launch` (Paddle's CPU kernels here use one core per process); the
result equals the one-process build up to float summation order.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import ppflux_lightning  # noqa: F401  (before paddle: sets the MKL switch)
from ppflux_lightning.toy.build import BuildSettings, build_toy
from ppflux_lightning.utils.atomic import atomic_file

DEFAULT_FEATURES = os.path.join("assets", "toy", "task_features")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/toy/flux-toy", help="pipeline folder to write (replaced whole)")
    parser.add_argument("--quick", action="store_true", help="tiny schedules: an end-to-end check in 1-2 minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=None, help="override the VAE's training steps")
    parser.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's training steps")
    parser.add_argument("--guidance-steps", type=int, default=None, help="override the guidance-distillation steps")
    parser.add_argument("--eval-prompts", type=int, default=None, help="prompts of the report's few-step curve")
    parser.add_argument("--features", default=None,
                        help="toy FID feature network folder for the report's few-step curve (default: "
                             "assets/toy/task_features when it exists)")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel CPU processes (paddle.distributed.launch)")
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and "PADDLE_TRAINER_ID" not in os.environ:
        return _launch(args.nproc, sys.argv[1:] if argv is None else argv)
    settings = BuildSettings.quick(args.seed) if args.quick else BuildSettings(seed=args.seed)
    if args.eval_prompts is not None:
        settings.eval_prompts = args.eval_prompts
    if args.vae_steps is not None:
        settings.vae_steps = args.vae_steps
    for name in ("teacher_steps", "guidance_steps"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings.teacher, name.replace("teacher_", ""), value)
    settings.teacher.__post_init__()  # re-check the overridden schedule
    out = args.out.rstrip("/")
    features = args.features
    if features is None and os.path.isfile(os.path.join(DEFAULT_FEATURES, "task_features.json")):
        features = DEFAULT_FEATURES
    report = build_toy(out, settings, samples_path=out + "-samples.png", features_dir=features)
    if report is None:  # not process 0 of a data-parallel build
        return 0
    with atomic_file(out + "-report.json") as tmp:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
    summary = {k: v for k, v in report.items() if k != "settings"}
    print(json.dumps(summary, indent=2))
    print(f"toy FLUX written to {os.path.abspath(out)} in {report['build_seconds']:.0f} s")
    return 0


def _launch(nproc, argv):
    """Re-run this script under paddle.distributed.launch with `nproc` processes; process 0's output is echoed."""
    log_dir = tempfile.mkdtemp(prefix="build_toy_launch_")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir", log_dir,
           os.path.abspath(__file__), *argv]
    code = subprocess.call(cmd)
    log = os.path.join(log_dir, "workerlog.0")
    if code != 0:
        if os.path.isfile(log):
            with open(log) as f:
                sys.stderr.write(f.read()[-4000:])
        sys.stderr.write(f"build_toy: the {nproc}-process build failed (exit code {code}); logs in {log_dir}\n")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
