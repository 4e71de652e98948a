"""Human evaluation kit.

    python tools/human_eval.py make --models teacher=out/teacher student=out/student --prompts prompts.txt \
        --out study.html
    python tools/human_eval.py score ratings-*.csv --key study.key.json [--json results.json]

`make` writes one self-contained HTML page (send it to each reviewer) and `study.key.json` (keep it: it maps the
page's anonymous model ids back to names). `score` averages the reviewers' exported CSV files per model and ranks them.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.eval import human_eval  # noqa: E402
from ppflux_lightning.eval.image_io import read_prompts  # noqa: E402
from ppflux_lightning.utils.atomic import atomic_file  # noqa: E402
from ppflux_lightning.utils.files import read_json_object  # noqa: E402


def parse_models(items):
    models = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise cli.UserError(f"--models entries must look like name=FOLDER, got {item!r}")
        if name in models:
            raise cli.UserError(f"--models: model name {name!r} given twice")
        cli.existing_dir(f"--models {name}", folder)
        models[name] = folder
    return models


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the rating page")
    make.add_argument("--models", nargs="+", required=True, metavar="NAME=FOLDER")
    make.add_argument("--prompts", required=True, help="text, JSON list or COCO captions file")
    make.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    make.add_argument("--out", required=True, help="the HTML page to write")
    make.add_argument("--seed", type=int, default=0, help="seed of the anonymous ids and the shuffles")
    make.add_argument("--display-size", type=int, default=256, help="shown image size in pixels")
    make.add_argument("--title", default="Image quality study")
    score = sub.add_parser("score", help="aggregate exported ratings")
    score.add_argument("csv", nargs="+", help="CSV files exported by reviewers")
    score.add_argument("--key", default=None, help="the page's .key.json (maps m1, m2, ... to model names)")
    score.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.command == "make":
        cli.number("--limit", args.limit, min=1)
        cli.seed("--seed", args.seed)
        cli.number("--display-size", args.display_size, min=16, max=4096)
        models = parse_models(args.models)
        folders = list(models.values()) + [args.prompts]
        cli.output_file("--out", args.out, (".html", ".htm"), protect=folders)
        cli.output_file("--out", human_eval.key_path(args.out), protect=folders)
        prompts = read_prompts(args.prompts, args.limit)
        key = human_eval.make_page(models, prompts, args.out, args.seed, args.display_size, args.title)
        print(f"wrote {args.out} ({len(prompts)} prompts x {len(key)} models); keep {human_eval.key_path(args.out)}")
        return
    if args.json:
        cli.output_file("--json", args.json, (".json",), protect=args.csv + [args.key])
    key = read_json_object(args.key, "--key file") if args.key else None
    results = human_eval.aggregate(human_eval.read_ratings(args.csv), key)
    print(human_eval.markdown_table(results), end="")
    if args.json:
        with atomic_file(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
