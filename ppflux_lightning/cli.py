"""What every command-line tool shares: one-line errors for a user's mistake, quiet third-party output, and
declarative argument checks that run before any model (or Paddle) is loaded.

    def _main(argv):
        args = cli.parser(__doc__).parse_args(argv) ...; cli.number("--steps", args.steps, min=1) ...
        (import paddle and load models only now)
    def main(argv=None):
        return cli.run(_main, argv)
    if __name__ == "__main__":
        sys.exit(main())

`run` turns a `UserError` (bad option, config, input file, output path; `utils/errors.py`) or a missing file into
`error: <message>` on stderr and exit code 2; `--debug` or `PPFLUX_DEBUG=1` shows the traceback instead. Any other
exception is a bug and keeps its traceback. `--verbose` lets the known third-party warnings through.
"""

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
import warnings

from .utils.atomic import MARKER, check_output_dir, write_marker
from .utils.errors import UserError

DEBUG_ENV = "PPFLUX_DEBUG"
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
# Known third-party noise on a normal run (message starts); shown with --verbose.
NOISY_WARNINGS = (
    "No ccache found",                       # paddle.utils.cpp_extension at import
    "Setuptools is replacing distutils",     # setuptools' distutils hack, triggered by paddle's import
    "To copy construct from a tensor",       # paddle.to_tensor(tensor) inside paddlenlp
    "Tensor do not have 'place' interface",  # tracing paddlenlp's T5 for export
    "Find variable `features` defined in global scope",  # dy2static on the block loop's feature list (export)
)
NOISY_LOGGERS = ("datasets",)  # "PyTorch version ... available." (datasets.config, imported by paddlenlp)
# Paddle's C++ (glog) warnings: tracing paddlenlp's CLIP prints PIR's "not support input out tensor for now!!!!!".
NATIVE_LOG_LEVEL = {"GLOG_minloglevel": "2"}
_verbose = False  # set by `run` from --verbose
SEED_LIMIT = 2**32  # numpy's and Paddle's seeds are unsigned 32-bit
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # pipelines.grid.FORMATS


class OverridesAction(argparse.Action):
    """`-o a=1 b=2` (PaddleDetection) and `-o a=1 -o b=2` (PaddleClas), mixed freely: one flat list."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items.extend(values)
        setattr(namespace, self.dest, items)


def add_overrides(parser, help_text="override a config key, e.g. -o train.max_steps=10 (-o a=1 b=2 or -o a=1 -o b=2)"):
    parser.add_argument("-o", "--override", nargs="+", action=OverridesAction, default=[], metavar="KEY=VALUE",
                        help=help_text)


def add_common(parser):
    """`--debug` and `--verbose` (handled by `run`; listed here for --help)."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or PPFLUX_DEBUG=1)")
    parser.add_argument("--verbose", action="store_true", help="show third-party warnings")
    return parser


def parser(doc, **kwargs):
    """An ArgumentParser described by the first line of `doc`, with `--debug` and `--verbose`."""
    return add_common(argparse.ArgumentParser(description=doc.splitlines()[0], **kwargs))


def quiet():
    """Filter the known third-party warnings and info logs (call before importing paddle / paddlenlp)."""
    for text in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=r"\s*" + text)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_native_warnings():
    """Hide Paddle's C++ warnings for the rest of this process unless --verbose; call before importing paddle, in a
    tool whose known native output is noise (the export's tracing)."""
    if not _verbose:
        for name, value in NATIVE_LOG_LEVEL.items():
            os.environ.setdefault(name, value)


def quiet_launcher_stop():
    """Under `paddle.distributed.launch` the launcher stops the other ranks with SIGTERM once one rank exits (e.g. on
    a user error); Paddle's C++ signal handler would print a stack trace for that expected stop. Let SIGTERM end a
    launched process silently instead (call after paddle is imported; a no-op outside a launch)."""
    if "PADDLE_TRAINER_ID" in os.environ:
        import paddle

        paddle.disable_signal_handler()


def run(main, argv=None):
    """Call `main(argv)` and return its exit code; a user error becomes one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    global _verbose
    _verbose = "--verbose" in argv
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    if not _verbose:
        quiet()
    try:
        code = main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    return 0 if code is None else int(code)


# ---------------------------------------------------------------- declarative checks
def number(option, value, min=None, max=None, above=None, below=None, integer=False):  # noqa: A002
    """`value` unless it is non-finite or outside [min, max] / (above, below); the error names the option."""
    if value is None:
        return value
    if integer and (isinstance(value, bool) or not float(value).is_integer()):
        raise UserError(f"{option} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise UserError(f"{option} must be a finite number, got {value!r}")
    bounds = [(min, lambda v, b: v >= b, ">="), (max, lambda v, b: v <= b, "<="),
              (above, lambda v, b: v > b, ">"), (below, lambda v, b: v < b, "<")]
    for bound, ok, sign in bounds:
        if bound is not None and not ok(value, bound):
            raise UserError(f"{option} must be {sign} {bound}, got {value!r}")
    return value


def seed(option, value):
    """A seed numpy and Paddle both accept: an integer in [0, 2**32)."""
    return number(option, value, min=0, below=SEED_LIMIT, integer=True)


def multiple_of(option, value, multiple):
    number(option, value, above=0, integer=True)
    if value % multiple:
        raise UserError(f"{option} must be a positive multiple of {multiple}, got {value!r}")
    return value


def existing_file(option, path):
    if path is not None and not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "not found"
        raise UserError(f"{option}: file {path!r} {what}")
    return path


def lora_specs(option, values, weight=1.0):
    """Repeatable `FILE[:WEIGHT]` LoRA options -> `[{"file", "weight", "alpha"}]`, each file existing and each weight
    finite (checked before any model loads)."""
    from .utils.lora_specs import parse_lora_specs

    specs = parse_lora_specs(values, weight)
    for spec in specs:
        existing_file(option, spec["file"])
        number(f"{option} weight of {spec['file']!r}", spec["weight"])
    return specs


def existing_dir(option, path):
    if path is not None and not os.path.isdir(path):
        what = "is a file, not a folder" if os.path.exists(path) else "not found"
        raise UserError(f"{option}: folder {path!r} {what}")
    return path


def output_file(option, path, suffixes=None, protect=()):
    """An output file path: not a folder, not an input of the run, its folder creatable, a known suffix."""
    if os.path.isdir(path):
        raise UserError(f"{option} {path!r} is a folder; give a file name")
    if suffixes is not None and os.path.splitext(path)[1].lower() not in suffixes:
        raise UserError(f"{option} {path!r} must end in {', '.join(sorted(suffixes))}")
    real = os.path.realpath(path)
    for p in protect:
        if p and os.path.exists(p) and (real == os.path.realpath(p) or real.startswith(os.path.realpath(p) + os.sep)):
            raise UserError(f"{option} {path!r} would overwrite or sit inside {p!r}, an input of this run")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path!r}: {folder!r} is a file, not a folder")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{option} {path!r}: folder {folder!r} is not writable")
    return path


def image_output(option, path, protect=()):
    """An image file path whose suffix names a format we write (.png, .jpg, .webp, .bmp)."""
    return output_file(option, path, IMAGE_SUFFIXES, protect)


def output_dir(option, path, overwrite=False, ours=None, protect=()):
    """An output folder we may write: new, empty, or ours with --overwrite (see `utils.atomic.check_output_dir`)."""
    check_output_dir(path, overwrite, ours, protect, option)
    return path


# ---------------------------------------------------------------- checks that need the package (after the above)
def cache_config(method, threshold):
    """A `CacheConfig` from --cache / --cache_threshold; an unknown method or bad threshold is a user error."""
    from .acceleration import CacheConfig

    try:
        return CacheConfig(method=method, threshold=threshold)
    except ValueError as e:
        raise UserError(f"--cache {method!r}: {e}") from None


def warn_truncation(pipe, prompts, max_sequence_length=None):
    """Say on stderr when a prompt is longer than the text encoders read (CLIP's 77 tokens, T5's length)."""
    t5_len = max_sequence_length or pipe.default_max_sequence_length
    for prompt in prompts:
        for name, tokenizer, limit in (("CLIP", pipe.tokenizer, pipe.tokenizer.model_max_length),
                                       ("T5", pipe.tokenizer_2, t5_len)):
            count = len(tokenizer.tokenize(prompt)) + tokenizer.num_special_tokens_to_add(pair=False)
            if count > limit:
                print(f"warning: prompt {prompt[:40]!r}... is {count} {name} tokens; only the first {limit} are used",
                      file=sys.stderr)


@contextlib.contextmanager
def output_folder(path, kind):
    """Create `path` (if new) marked as our output of `kind`; when the body fails and the folder we created still
    holds nothing but the marker, remove it again, so a failed run leaves nothing behind."""
    top = os.path.abspath(path)  # the outermost folder this call creates (parents too)
    while not os.path.exists(os.path.dirname(top)):
        top = os.path.dirname(top)
    created = not os.path.exists(top)
    os.makedirs(path, exist_ok=True)
    write_marker(path, kind)
    try:
        yield path
    except BaseException:
        left = [os.path.join(r, f) for r, _, files in os.walk(top) for f in files]
        if created and left == [os.path.join(os.path.abspath(path), MARKER)]:
            shutil.rmtree(top, ignore_errors=True)
        raise
