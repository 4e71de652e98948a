"""Write files and folders under a temporary name and rename, so a crash never leaves half a checkpoint, and never
replace a folder we did not write.

Outputs get the permissions a plain `open()` / `os.makedirs()` gives under the user's umask (`mkstemp` and
`mkdtemp` alone would give 0600 / 0700). An existing output folder is replaced only when the caller allows it
(`overwrite`) and it is one of ours (`ours`: a marker file name, several, or a predicate); a file, the working
directory or one of its parents, and any `protect`ed path (e.g. the model being exported) are always refused.
"""

import contextlib
import json
import os
import shutil
import tempfile

from .errors import OutputExistsError

MARKER = ".ppflux_lightning.json"  # written into training and quickstart output folders: "this folder is ours"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain_mode(path, directory):
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_marker(folder, kind):
    """Mark `folder` as a ppflux_lightning output of `kind` (e.g. "training", "quickstart")."""
    with open(os.path.join(folder, MARKER), "w") as f:
        json.dump({"written_by": "ppflux_lightning", "kind": kind}, f)


def has_marker(folder, kind=None):
    """True when `folder` holds our marker (of `kind`, when given)."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("written_by") == "ppflux_lightning" and kind in (None, info.get("kind"))


def _is_ours(path, ours):
    if ours is None:
        return False
    if callable(ours):
        return bool(ours(path))
    names = [ours] if isinstance(ours, str) else list(ours)
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def _inside(child, parent):
    """True when `child` is `parent` or lies under it (both real paths)."""
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_dir(path, overwrite=False, ours=None, protect=(), option="output folder"):
    """Raise `OutputExistsError` (naming `option` and `path`) unless `path` may be written as a folder: it does not
    exist, or is an empty folder, or `overwrite` is set and it is ours. Never: a file, the working directory or a
    parent of it, a path that is, holds or sits inside one of `protect`, or a path under a file."""
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputExistsError(f"{option} {path!r}: {parent!r} is a file, not a folder")
    for p in protect:
        if not p or not os.path.exists(p):
            continue
        where = "is" if real == os.path.realpath(p) else "holds" if _inside(os.path.realpath(p), real) else \
            "is inside" if _inside(real, os.path.realpath(p)) else None
        if where:
            raise OutputExistsError(f"{option} {path!r} {where} {p!r}, an input of this run; not writing there")
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise OutputExistsError(f"{option} {path!r} exists and is not a folder; not replacing it")
    if _inside(os.path.realpath(os.getcwd()), real):
        raise OutputExistsError(f"{option} {path!r} is the working directory or a parent of it; not replacing it")
    if not os.listdir(path):
        return
    if not _is_ours(path, ours):
        raise OutputExistsError(f"{option} {path!r} exists and was not written by ppflux_lightning; not replacing "
                                "it (choose another path or remove it yourself)")
    if not overwrite:
        raise OutputExistsError(f"{option} {path!r} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputExistsError(f"cannot write {path!r}: {folder!r} is a file, not a folder")
    if os.path.isdir(path):
        raise OutputExistsError(f"cannot write the file {path!r}: a folder of that name exists")
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    os.close(fd)
    try:
        _plain_mode(tmp, directory=False)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path, overwrite=False, ours=None, protect=(), marker=None, option="output folder"):
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, on error it is removed.

    An existing `path` must pass `check_output_dir(path, overwrite, ours, protect)` (checked before and after the
    work). `marker` (a kind) writes our marker file into the folder, so a later run recognises it as ours."""
    check_output_dir(path, overwrite, ours, protect, option)
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        _plain_mode(tmp, directory=True)
        if marker:
            write_marker(tmp, marker)
        yield tmp
        if os.path.exists(path):
            check_output_dir(path, overwrite, ours, protect, option)
            old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(path) + "-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
