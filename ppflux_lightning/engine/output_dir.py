"""A training run's output folder: its `checkpoint-<step>/` folders, which checkpoint `-r` resumes, and the rule
for reusing the folder. Paddle-free, so the command line checks it before anything loads."""

import os
import re
import shutil

from ..utils.atomic import check_output_dir, has_marker
from ..utils.errors import CheckpointError, OutputExistsError

STATE_FILE = "trainer_state.json"
_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_path(output_dir, step):
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir):
    """[(step, path)] of complete checkpoints, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _DIR.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def resolve_resume(output_dir, resume):
    """`latest` -> the newest checkpoint in `output_dir` (an error if there is none); `auto` -> the same, or None
    (start fresh) when there is none; otherwise a checkpoint folder."""
    if resume in (None, ""):
        return None
    if resume in ("latest", "auto"):
        found = list_checkpoints(output_dir)
        if not found and resume == "latest":
            raise CheckpointError(f"-r latest: no checkpoint-* folder in train.output_dir {output_dir!r} to resume "
                                  "from (use -r auto to resume when there is one and start fresh otherwise)")
        return found[-1][1] if found else None
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise FileNotFoundError(f"resume path {resume!r} is not a checkpoint folder (no {STATE_FILE})")
    return resume


def is_training_output(path):
    """A folder a training run wrote: our marker, or a checkpoint in it."""
    return has_marker(path, "training") or bool(list_checkpoints(path))


def prepare_output_dir(output_dir, resume=None, overwrite=False, protect=()):
    """The command line's rule for `train.output_dir`, checked before anything loads. A new or empty folder is
    fine; resuming needs it to be ours; a fresh run into an earlier run's folder needs `overwrite` (the old run is
    then removed, by process 0); a foreign folder, a file, the working directory and the inputs are refused."""
    option = "train.output_dir"
    check_output_dir(output_dir, True, is_training_output, protect, option)
    if resume or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if not overwrite:
        raise OutputExistsError(f"{option} {output_dir!r} holds an earlier run: continue it with -r latest (or -r "
                                "auto), or pass --overwrite to replace it")
    if os.environ.get("PADDLE_TRAINER_ID", "0") == "0":  # process 0 of a launch (engine.distributed.is_main)
        shutil.rmtree(output_dir)
