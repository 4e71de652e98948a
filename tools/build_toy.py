"""Build the toy FLUX (`python tools/build_toy.py [--out DIR] [--overwrite] [--quick] [--seed 0] [--nproc 2]`).

Trains the toy VAE and teacher on the synthetic shapes task (`ppflux_lightning.toy.task`) and writes a
diffusers-layout FLUX folder, a sample grid and a JSON build report. `--nproc N` runs the training steps data-parallel
in N CPU processes through `paddle.distributed.launch` (Paddle's CPU kernels here use one core per process); the
result equals the one-process build up to float summation order. An existing toy model folder (the committed
`assets/toy/flux-toy` too) is replaced only with `--overwrite`; any other existing folder is refused.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.atomic import atomic_file, check_output_dir  # noqa: E402
from ppflux_lightning.utils.files import TOY_CONFIG_NAME  # noqa: E402

DEFAULT_FEATURES = os.path.join(ROOT, "assets", "toy", "task_features")  # the committed one, from any directory


def _main(argv):
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="assets/toy/flux-toy", help="pipeline folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing toy model folder")
    parser.add_argument("--quick", action="store_true", help="tiny schedules: an end-to-end check in 1-2 minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=None, help="override the VAE's training steps")
    parser.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's training steps")
    parser.add_argument("--guidance-steps", type=int, default=None, help="override the guidance-distillation steps")
    parser.add_argument("--eval-prompts", type=int, default=None, help="prompts of the report's few-step curve")
    parser.add_argument("--per-level", type=int, default=None,
                        help="one-object prompts per level of specification of the report's levels curve (0: none)")
    parser.add_argument("--captions-per-image", type=int, default=None,
                        help="captions the teacher sees each training image under (task.caption_variants)")
    parser.add_argument("--features", default=None,
                        help="toy FID feature network folder for the report's few-step curve (default: "
                             "assets/toy/task_features when it exists)")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel CPU processes (paddle.distributed.launch)")
    args = parser.parse_args(argv)
    cli.number("--nproc", args.nproc, min=1, max=os.cpu_count() or 1)
    cli.seed("--seed", args.seed)
    for option in ("--vae-steps", "--teacher-steps", "--guidance-steps", "--captions-per-image"):
        cli.number(option, getattr(args, option[2:].replace("-", "_")), min=1)
    cli.number("--per-level", args.per_level, min=0)
    out = args.out.rstrip("/")
    check_output_dir(out, args.overwrite, TOY_CONFIG_NAME, option="--out")
    for path in (out + "-samples.png", out + "-report.json"):
        cli.output_file("--out", path)
    if args.nproc > 1 and "PADDLE_TRAINER_ID" not in os.environ:
        return _launch(args.nproc, argv)
    from ppflux_lightning.toy.build import BuildSettings, build_toy
    from ppflux_lightning.toy.features import TASK_FEATURES_CONFIG

    settings = BuildSettings.quick(args.seed) if args.quick else BuildSettings(seed=args.seed)
    for name, field in (("eval_prompts", "eval_prompts"), ("per_level", "eval_per_level"),
                        ("captions_per_image", "captions_per_image")):
        if getattr(args, name) is not None:
            setattr(settings, field, getattr(args, name))
    if args.vae_steps is not None:
        settings.vae_steps = args.vae_steps
    for name in ("teacher_steps", "guidance_steps"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings.teacher, name.replace("teacher_", ""), value)
    settings.teacher.__post_init__()  # re-check the overridden schedule
    features = args.features
    if features is None and os.path.isfile(os.path.join(DEFAULT_FEATURES, TASK_FEATURES_CONFIG)):
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


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
