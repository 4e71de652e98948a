"""Import a script of tools/ or deploy/ by its path (neither folder is a package), as a fresh module each call."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path):
    """`path`: relative to the repository (e.g. "tools/eval.py") or absolute."""
    path = os.path.join(ROOT, path)
    name = "script_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
