"""The toy world sits on top: no product module of the package imports `ppflux_lightning.toy` (checked on the
source with `ast`, so lazy imports inside functions count too)."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), os.pardir, "ppflux_lightning")
TOY = "ppflux_lightning.toy"


def imported_modules(path, module):
    """Absolute names of every module `path` (the module `module`) imports, relative imports resolved."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def product_modules():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, os.path.join(PACKAGE, os.pardir))
            module = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
            if module == TOY or module.startswith(TOY + "."):
                continue
            yield path, module


def test_product_modules_never_import_the_toy_world():
    modules = list(product_modules())
    assert any(m.startswith("ppflux_lightning.eval.") for _, m in modules)  # the walk found the package
    offenders = sorted(f"{module} imports {name}" for path, module in modules
                       for name in imported_modules(path, module) if name == TOY or name.startswith(TOY + "."))
    assert not offenders, "product modules import the toy world:\n" + "\n".join(offenders)


def test_the_import_parser_resolves_relative_imports(tmp_path):
    source = tmp_path / "adherence.py"
    source.write_text("from ..toy import task\nfrom . import fid\nimport ppflux_lightning.toy.build\n"
                      "def f():\n    from ..toy.detector import read\n")
    names = imported_modules(str(source), "ppflux_lightning.eval.adherence")
    assert "ppflux_lightning.toy.task" in names and "ppflux_lightning.eval.fid" in names
    assert "ppflux_lightning.toy.build" in names and "ppflux_lightning.toy.detector" in names
