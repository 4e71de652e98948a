"""Bad input to every command-line tool: one line `error: ...` naming the bad value, exit code 2, no traceback, and
no file created, changed or deleted. Plus the safety rules behind it: output folders, file modes, `-o` styles,
--debug, loader errors reaching the main process, and a non-finite update stopping training.

The table runs each tool as a subprocess, in parallel, inside one sandbox folder whose every file (and the committed
toy model's) is compared before and after. Almost every check runs before Paddle is imported, so a case costs a
Python start-up; the few marked slow import Paddle first.
"""

import concurrent.futures
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "assets", "toy", "flux-toy")
sys.path.insert(0, ROOT)

from ppflux_lightning import cli  # noqa: E402
from ppflux_lightning.utils import atomic  # noqa: E402
from ppflux_lightning.utils.errors import OutputExistsError, UserError  # noqa: E402

INFER = ["tools/infer.py", "--model", "m", "--prompt", "a red circle", "--height", "48", "--width", "48"]
EXPORT = ["deploy/export.py", "--model", "m", "--height", "48", "--width", "48"]
DEPLOY = ["deploy/infer.py", "--model_dir", "export_ours", "--prompt", "a red circle"]
TRAIN = ["tools/train.py", "-c", "cfg.yaml"]
CACHE = ["tools/cache_embeddings.py", "--model", "m", "--data-type", "folder", "--data-path", "imgs"]
GEN = ["tools/eval.py", "generate", "--model", "m", "--prompts", "prompts.txt"]
MAKE = ["tools/human_eval.py", "make", "--prompts", "prompts.txt"]

# (case id, argv relative to the repository, text the error line must contain)
CASES = [
    # tools/infer.py
    ("infer-steps-0", INFER + ["--steps", "0", "--out", "out/a.png"], "--steps must be >= 1, got 0"),
    ("infer-steps-negative", INFER + ["--steps", "-3", "--out", "out/a.png"], "got -3"),
    ("infer-steps-text", INFER + ["--steps", "four"], "'four'"),
    ("infer-guidance-nan", INFER + ["--guidance", "nan", "--out", "out/a.png"], "--guidance must be a finite"),
    ("infer-guidance-inf", INFER + ["--guidance", "inf", "--out", "out/a.png"], "got inf"),
    ("infer-guidance-negative", INFER + ["--guidance", "-1", "--out", "out/a.png"], "got -1.0"),
    ("infer-height", INFER + ["--height", "50", "--out", "out/a.png"], "--height must be a positive multiple of 8"),
    ("infer-width-0", INFER + ["--width", "0", "--out", "out/a.png"], "--width must be > 0, got 0"),
    ("infer-seed-negative", INFER + ["--seed", "-1", "--out", "out/a.png"], "--seed must be >= 0, got -1"),
    ("infer-seed-huge", INFER + ["--seed", "4294967296", "--out", "out/a.png"], "got 4294967296"),
    ("infer-num-images", INFER + ["--num_images", "0", "--out", "out/a.png"], "--num_images must be >= 1, got 0"),
    ("infer-lora-scale-nan", INFER + ["--lora_scale", "nan", "--out", "out/a.png"], "--lora_scale must be a finite"),
    ("infer-lora-missing", INFER + ["--lora", "missing.safetensors", "--out", "out/a.png"], "'missing.safetensors'"),
    ("infer-out-suffix", INFER + ["--out", "out/a.gif"], "'out/a.gif' must end in"),
    ("infer-out-folder", INFER + ["--out", "foreign"], "--out 'foreign' is a folder"),
    ("infer-out-under-file", INFER + ["--out", "file.txt/a.png"], "file.txt' is a file"),
    ("infer-out-in-model", INFER + ["--out", "m/a.png"], "'m', an input"),
    ("infer-model-missing", ["tools/infer.py", "--model", "nope", "--prompt", "x"], "'nope'"),
    ("infer-model-file", ["tools/infer.py", "--model", "file.txt", "--prompt", "x"], "'file.txt'"),
    ("infer-no-spiece", ["tools/infer.py", "--model", "no_spiece", "--prompt", "x"], "spiece.model"),
    ("infer-no-vocab", ["tools/infer.py", "--model", "no_vocab", "--prompt", "x"], "vocab.json"),
    ("infer-bad-config-json", ["tools/infer.py", "--model", "bad_config", "--prompt", "x"],
     "transformer/config.json' is not valid JSON"),
    ("infer-config-no-heads", ["tools/infer.py", "--model", "no_heads", "--prompt", "x"], "num_attention_heads"),
    ("infer-max-seq-0", INFER + ["--max_sequence_length", "0", "--out", "out/a.png"], "--max_sequence_length"),
    ("infer-max-seq-long", INFER + ["--max_sequence_length", "9999", "--out", "out/a.png"], "got 9999"),
    ("infer-empty-prompt", ["tools/infer.py", "--model", "m", "--prompt", " "], "--prompt is empty"),
    ("infer-cache-threshold", INFER + ["--cache_threshold", "-1", "--out", "out/a.png"], "--cache_threshold"),
    ("infer-dtype-choice", INFER + ["--dtype", "int8"], "'int8'"),
    # deploy/export.py
    ("export-cwd", EXPORT + ["--output", "."], "--output '.'"),
    ("export-over-model", EXPORT + ["--output", "m"], "--output 'm' is 'm', an input"),
    ("export-parent-of-model", ["deploy/export.py", "--model", "models/m", "--output", "models", "--height", "48",
                                "--width", "48"], "holds 'models/m'"),
    ("export-inside-model", EXPORT + ["--output", "m/export"], "is inside 'm'"),
    ("export-foreign", EXPORT + ["--output", "foreign"], "'foreign' exists and was not written by ppflux_lightning"),
    ("export-file", EXPORT + ["--output", "file.txt"], "'file.txt' exists and is not a folder"),
    ("export-ours-no-overwrite", EXPORT + ["--output", "export_ours"], "pass --overwrite"),
    ("export-foreign-overwrite", EXPORT + ["--output", "foreign", "--overwrite"], "'foreign' exists and was not"),
    ("export-steps", EXPORT + ["--output", "out/e", "--steps", "0"], "--steps must be >= 1, got 0"),
    ("export-guidance-nan", EXPORT + ["--output", "out/e", "--guidance", "nan"], "--guidance must be a finite"),
    ("export-resolution", EXPORT + ["--output", "out/e", "--resolutions", "48x50"], "got 50"),
    ("export-resolution-text", EXPORT + ["--output", "out/e", "--resolutions", "big"], "'big'"),
    ("export-lora-alpha", EXPORT + ["--output", "out/e", "--lora_alpha", "0"], "--lora_alpha must be > 0, got 0.0"),
    ("export-lora-scale-inf", EXPORT + ["--output", "out/e", "--lora_scale", "inf"], "--lora_scale"),
    ("export-height", EXPORT + ["--output", "out/e", "--height", "49"], "--height must be a positive multiple"),
    ("export-model-missing", ["deploy/export.py", "--model", "nope", "--output", "out/e"], "'nope'"),
    ("export-max-seq", EXPORT + ["--output", "out/e", "--max_sequence_length", "0"], "--max_sequence_length"),
    # deploy/infer.py
    ("deploy-dir-missing", ["deploy/infer.py", "--model_dir", "nope", "--prompt", "x"], "'nope' not found"),
    ("deploy-dir-foreign", ["deploy/infer.py", "--model_dir", "foreign", "--prompt", "x"], "no deploy.yaml"),
    ("deploy-seed", DEPLOY + ["--seed", "-1", "--output", "out/d.png"], "--seed must be >= 0, got -1"),
    ("deploy-num-images", DEPLOY + ["--num_images", "0", "--output", "out/d.png"], "--num_images"),
    ("deploy-output-suffix", DEPLOY + ["--output", "out/d.txt"], "'out/d.txt' must end in"),
    ("deploy-device", DEPLOY + ["--device", "tpu", "--output", "out/d.png"], "'tpu'"),
    ("deploy-steps", DEPLOY + ["--steps", "0", "--output", "out/d.png"], "--steps must be >= 1, got 0"),
    ("deploy-guidance-nan", DEPLOY + ["--guidance", "nan", "--output", "out/d.png"], "--guidance"),
    ("deploy-threads", DEPLOY + ["--threads", "0", "--output", "out/d.png"], "--threads must be >= 1"),
    # tools/train.py (both -o styles)
    ("train-lr-nan", TRAIN + ["-o", "train.lr=.nan"], "'train.lr' must be a finite number, got nan"),
    ("train-lr-inf", TRAIN + ["-o", "train.lr=.inf"], "'train.lr' must be a finite number, got inf"),
    ("train-lr-0", TRAIN + ["-o", "train.lr=0"], "'train.lr' must be > 0"),
    ("train-max-steps-0", TRAIN + ["-o", "train.max_steps=0"], "'train.max_steps' must be >= 1, got 0"),
    ("train-max-steps-neg", TRAIN + ["-o", "train.lr=1e-4", "train.max_steps=-1"], "got -1"),
    ("train-seed", TRAIN + ["-o", "train.seed=-1"], "'train.seed' must be >= 0, got -1"),
    ("train-guidance-inf", TRAIN + ["-o", "model.guidance=.inf"], "'model.guidance' must be a finite"),
    ("train-resolution", TRAIN + ["-o", "data.resolution=50"], "'data.resolution' must be a multiple of 16"),
    ("train-rank", TRAIN + ["-o", "lora.rank=0"], "'lora.rank' must be >= 1, got 0"),
    ("train-weight", TRAIN + ["-o", "objectives.dmd.weight=-1"], "'objectives.dmd.weight' must be >= 0"),
    ("train-betas", TRAIN + ["-o", "train.betas=[0.9, 1.5]"], "'train.betas'"),
    ("train-unknown-key", TRAIN + ["-o", "train.bogus=1"], "'train.bogus'"),
    ("train-no-equals", TRAIN + ["-o", "noequals"], "'noequals'"),
    ("train-data-missing", TRAIN + ["-o", "data.path=nope"], "'nope'"),
    ("train-model-no-heads", TRAIN + ["-o", "model.pretrained=no_heads"], "num_attention_heads"),
    ("train-out-cwd", TRAIN + ["-o", "train.output_dir=."], "train.output_dir '.'"),
    ("train-out-foreign", TRAIN + ["-o", "train.output_dir=foreign"], "'foreign' exists and was not written"),
    ("train-out-file", TRAIN + ["-o", "train.output_dir=file.txt"], "'file.txt' exists and is not a folder"),
    ("train-out-data", TRAIN + ["-o", "train.output_dir=imgs"], "'imgs' is 'imgs', an input"),
    ("train-out-earlier-run", TRAIN + ["-o", "train.output_dir=train_ours"], "-r latest"),
    ("train-resume-nothing", TRAIN + ["-r", "latest", "-o", "train.output_dir=out/t"], "no checkpoint-*"),
    ("train-resume-missing", TRAIN + ["-r", "nope_ckpt"], "'nope_ckpt'"),
    ("train-resume-overwrite", TRAIN + ["-r", "latest", "--overwrite"], "contradict"),
    ("train-config-missing", ["tools/train.py", "-c", "missing.yaml"], "missing.yaml"),
    ("train-config-bad-yaml", ["tools/train.py", "-c", "bad.yaml"], "bad.yaml' is not valid YAML"),
    # tools/cache_embeddings.py
    ("cache-resolution", CACHE + ["--out", "out/c", "--resolution", "50"], "--resolution must be a positive multiple"),
    ("cache-shard-size", CACHE + ["--out", "out/c", "--shard-size", "0"], "--shard-size must be >= 1, got 0"),
    ("cache-batch-size", CACHE + ["--out", "out/c", "--batch-size", "-1"], "--batch-size must be >= 1, got -1"),
    ("cache-max-seq", CACHE + ["--out", "out/c", "--max-sequence-length", "0"], "--max-sequence-length"),
    ("cache-data-missing", ["tools/cache_embeddings.py", "--model", "m", "--data-type", "folder", "--data-path",
                            "nope", "--out", "out/c"], "'nope'"),
    ("cache-override-no-config", CACHE + ["--out", "out/c", "-o", "a=1"], "-o overrides need a config"),
    ("cache-model-missing", ["tools/cache_embeddings.py", "--model", "nope", "--out", "out/c"], "'nope'"),
    # tools/quickstart.py
    ("quickstart-model-missing", ["tools/quickstart.py", "--model", "nope", "--out", "out/q"], "'nope'"),
    ("quickstart-out-foreign", ["tools/quickstart.py", "--model", "m", "--out", "foreign"], "'foreign' exists"),
    ("quickstart-steps", ["tools/quickstart.py", "--model", "m", "--out", "out/q", "--steps", "0"], "--steps"),
    ("quickstart-eval-prompts", ["tools/quickstart.py", "--model", "m", "--out", "out/q", "--eval-prompts", "0"],
     "--eval-prompts must be >= 1"),
    ("quickstart-train-images", ["tools/quickstart.py", "--model", "m", "--out", "out/q", "--train-images", "-1"],
     "--train-images"),
    ("quickstart-lr-nan", ["tools/quickstart.py", "--model", "m", "--out", "out/q", "-o", "train.lr=.nan"],
     "'train.lr'"),
    ("quickstart-seed", ["tools/quickstart.py", "--model", "m", "--out", "out/q", "--seed", "-5"], "got -5"),
    # tools/build_toy.py and tools/build_tiny_pipeline.py
    ("build-toy-foreign", ["tools/build_toy.py", "--out", "foreign"], "'foreign' exists and was not written"),
    ("build-toy-no-overwrite", ["tools/build_toy.py", "--out", "m"], "pass --overwrite"),
    ("build-toy-nproc", ["tools/build_toy.py", "--out", "out/toy", "--nproc", "0"], "--nproc must be >= 1, got 0"),
    ("build-toy-steps", ["tools/build_toy.py", "--out", "out/toy", "--teacher-steps", "0"], "--teacher-steps"),
    ("build-toy-seed", ["tools/build_toy.py", "--out", "out/toy", "--seed", "-1"], "--seed"),
    ("build-tiny-foreign", ["tools/build_tiny_pipeline.py", "--out", "foreign"], "'foreign' exists"),
    ("build-tiny-file", ["tools/build_tiny_pipeline.py", "--out", "file.txt"], "'file.txt' exists and is not a"),
    ("build-tiny-seed", ["tools/build_tiny_pipeline.py", "--out", "out/tiny", "--seed", "-1"], "--seed"),
    # tools/eval.py
    ("eval-model-missing", ["tools/eval.py", "generate", "--model", "nope", "--prompts", "prompts.txt", "--out",
                            "out/g"], "'nope'"),
    ("eval-prompts-missing", ["tools/eval.py", "generate", "--model", "m", "--prompts", "nope.txt", "--out",
                              "out/g"], "'nope.txt'"),
    ("eval-steps", GEN + ["--steps", "0", "--out", "out/g"], "--steps must be >= 1, got 0"),
    ("eval-seed", GEN + ["--seed", "-1", "--out", "out/g"], "--seed"),
    ("eval-height", GEN + ["--height", "50", "--out", "out/g"], "--height must be a positive multiple"),
    ("eval-limit", GEN + ["--limit", "0", "--out", "out/g"], "--limit must be >= 1, got 0"),
    ("eval-out-foreign", GEN + ["--out", "foreign"], "'foreign' exists and was not written"),
    ("eval-reference-steps", ["tools/eval.py", "run", "--model", "m", "--prompts", "prompts.txt", "--out", "out/r",
                              "--reference-steps", "0"], "--reference-steps"),
    ("eval-images-missing", ["tools/eval.py", "score", "--images", "nope", "--out", "out/s"], "'nope'"),
    ("eval-features-no-reference", ["tools/eval.py", "score", "--images", "imgs", "--features", "task:x", "--out",
                                    "out/s"], "--reference"),
    # tools/human_eval.py
    ("human-one-model", MAKE + ["--models", "a=imgs", "--out", "out/p.html"], "at least 2 models"),
    ("human-model-twice", MAKE + ["--models", "a=imgs", "a=imgs", "--out", "out/p.html"], "'a' given twice"),
    ("human-model-format", MAKE + ["--models", "a", "b=imgs", "--out", "out/p.html"], "got 'a'"),
    ("human-model-missing", MAKE + ["--models", "a=nope", "b=imgs", "--out", "out/p.html"], "'nope'"),
    ("human-non-image", MAKE + ["--models", "a=imgs", "b=imgs_bad", "--out", "out/p.html"], "bad.png"),
    ("human-out-suffix", MAKE + ["--models", "a=imgs", "b=imgs", "--out", "out/p.txt"], "'out/p.txt' must end in"),
    ("human-limit", MAKE + ["--models", "a=imgs", "b=imgs", "--out", "out/p.html", "--limit", "0"], "--limit"),
    ("human-key-unknown-id", ["tools/human_eval.py", "score", "ratings.csv", "--key", "key.json"], "['m3']"),
    ("human-bad-score", ["tools/human_eval.py", "score", "ratings_bad.csv"], "'eleven'"),
    ("human-key-bad-json", ["tools/human_eval.py", "score", "ratings.csv", "--key", "bad.json"], "bad.json"),
    # tools/convert_fid_inception.py, tools/inspect_checkpoint.py, tools/estimate_memory.py
    ("convert-fid-missing", ["tools/convert_fid_inception.py", "nope.pth", "out/f.safetensors"], "'nope.pth'"),
    ("convert-fid-suffix", ["tools/convert_fid_inception.py", "file.txt", "out/f.bin"], "'out/f.bin' must end in"),
    ("convert-fid-over-src", ["tools/convert_fid_inception.py", "m/model_index.json", "m"], "'m' is a folder"),
    ("inspect-missing", ["tools/inspect_checkpoint.py", "nope"], "'nope'"),
    ("inspect-bad-config", ["tools/inspect_checkpoint.py", "m", "--config", "bad.json"], "bad.json"),
    ("estimate-config-missing", ["tools/estimate_memory.py", "-c", "nope.yaml"], "'nope.yaml'"),
    ("estimate-world-size", ["tools/estimate_memory.py", "-c", "cfg.yaml", "--world_size", "0"], "--world_size"),
    ("estimate-unknown-key", ["tools/estimate_memory.py", "-c", "cfg.yaml", "-o", "train.bogus=1"], "train.bogus"),
    ("human-json-suffix", ["tools/human_eval.py", "score", "ratings.csv", "--json", "out/r.txt"], "'out/r.txt'"),
]
# Cases whose check needs Paddle imported (still before any model loads).
SLOW = [
    ("infer-dtype-bf16-cpu", INFER + ["--dtype", "bfloat16", "--out", "out/a.png"], "--dtype=bfloat16 needs a GPU"),
    ("infer-cache-unknown", INFER + ["--cache", "bogus", "--out", "out/a.png"], "'bogus'"),
    ("deploy-bad-yaml", ["deploy/infer.py", "--model_dir", "export_badyaml", "--prompt", "x", "--output",
                         "out/d.png"], "deploy.yaml' is not valid YAML"),
    ("deploy-incomplete-yaml", DEPLOY + ["--output", "out/d.png"], "lacks the keys"),
    ("eval-size-mismatch", ["tools/eval.py", "score", "--images", "imgs", "--reference", "imgs_small", "--prompts",
                            "prompts.txt", "--out", "out/s"], "24x24"),
    ("inspect-not-flux", ["tools/inspect_checkpoint.py", "foreign"], "'foreign'"),
    ("cache-out-foreign", CACHE + ["--out", "foreign"], "'foreign' exists and was not written"),
]
ALL = CASES + SLOW


def _png(path, size, value=0):
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _model_copy(sandbox, name, edit):
    path = os.path.join(sandbox, name)
    shutil.copytree(TOY, path)
    edit(path)


def _make_sandbox(sandbox):
    shutil.copytree(TOY, os.path.join(sandbox, "m"))
    os.makedirs(os.path.join(sandbox, "models"))
    shutil.copytree(TOY, os.path.join(sandbox, "models", "m"))
    _model_copy(sandbox, "no_spiece", lambda p: os.remove(os.path.join(p, "tokenizer_2", "spiece.model")))
    _model_copy(sandbox, "no_vocab", lambda p: os.remove(os.path.join(p, "tokenizer", "vocab.json")))

    def bad_config(p):
        with open(os.path.join(p, "transformer", "config.json"), "w") as f:
            f.write("{not json")

    def no_heads(p):
        path = os.path.join(p, "transformer", "config.json")
        with open(path) as f:
            config = json.load(f)
        del config["num_attention_heads"]
        with open(path, "w") as f:
            json.dump(config, f)

    _model_copy(sandbox, "bad_config", bad_config)
    _model_copy(sandbox, "no_heads", no_heads)
    os.makedirs(os.path.join(sandbox, "foreign"))
    for name, text in (("foreign/keep.txt", "mine"), ("file.txt", "mine"), ("bad.yaml", "a: [b"),
                       ("bad.json", "{oops"), ("export_ours/deploy.yaml", "format_version: 1\n"),
                       ("export_badyaml/deploy.yaml", "a: [b\n"), ("train_ours/config.yaml", "train: {}\n"),
                       ("prompts.txt", "a red circle\na blue square\na green triangle\n")):
        path = os.path.join(sandbox, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    atomic.write_marker(os.path.join(sandbox, "train_ours"), "training")
    for folder, size in (("imgs", 48), ("imgs_small", 24), ("imgs_bad", 48)):
        os.makedirs(os.path.join(sandbox, folder))
        for i in range(3):
            _png(os.path.join(sandbox, folder, f"{i:05d}.png"), size, 40 * i)
            with open(os.path.join(sandbox, folder, f"{i:05d}.txt"), "w") as f:
                f.write("a red circle")
    with open(os.path.join(sandbox, "imgs_bad", "00001.png"), "w") as f:
        f.write("not an image")
    os.rename(os.path.join(sandbox, "imgs_bad", "00001.png"), os.path.join(sandbox, "imgs_bad", "bad.png"))
    with open(os.path.join(sandbox, "cfg.yaml"), "w") as f:
        yaml.safe_dump({"_BASE_": os.path.join(ROOT, "configs", "toy", "full.yaml"),
                        "model": {"pretrained": "m"}, "data": {"type": "folder", "path": "imgs", "resolution": 48},
                        "train": {"output_dir": "out/train"}}, f)
    with open(os.path.join(sandbox, "key.json"), "w") as f:
        json.dump({"m1": "a", "m2": "b"}, f)
    for name, model, score in (("ratings.csv", "m3", "5"), ("ratings_bad.csv", "m1", "eleven")):
        with open(os.path.join(sandbox, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["reviewer", "prompt_index", "prompt", "model", "score"])
            writer.writerow(["ann", "0", "a red circle", "m1", "4"])
            writer.writerow(["ann", "0", "a red circle", model, score])


def snapshot(*folders):
    """{path: (size, mtime, mode)} of every file and folder under `folders`."""
    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                st = os.lstat(path)
                out[path] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def _run(sandbox, argv, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "PPFLUX_DEBUG"}
    env.update({"PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **(extra_env or {})})
    cmd = [sys.executable, os.path.join(ROOT, argv[0]), *argv[1:]]
    return subprocess.run(cmd, cwd=sandbox, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once (in parallel); the sandbox and the toy model snapshotted around all of them."""
    sandbox = str(tmp_path_factory.mktemp("cli_sandbox"))
    _make_sandbox(sandbox)
    before = snapshot(sandbox, TOY)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case_id: pool.submit(_run, sandbox, argv) for case_id, argv, _ in ALL}
        done = {case_id: future.result() for case_id, future in futures.items()}
    return {"sandbox": sandbox, "runs": done, "before": before, "after": snapshot(sandbox, TOY)}


def test_the_table_covers_every_tool_with_enough_cases():
    tools = {argv[0] for _, argv, _ in ALL}
    on_disk = {f"tools/{n}" for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py")}
    on_disk |= {f"deploy/{n}" for n in os.listdir(os.path.join(ROOT, "deploy")) if n.endswith(".py")}
    assert tools == on_disk
    assert len(ALL) >= 60 and len({case_id for case_id, _, _ in ALL}) == len(ALL)


@pytest.mark.parametrize("case_id, argv, needle", ALL, ids=[c[0] for c in ALL])
def test_bad_input_is_one_line_error(results, case_id, argv, needle):
    run = results["runs"][case_id]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert lines and "error: " in lines[-1], run.stderr[-3000:]
    assert needle in lines[-1], lines[-1]


def test_no_file_was_created_changed_or_deleted(results):
    before, after = results["before"], results["after"]
    assert sorted(set(after) - set(before)) == []  # nothing created (no out/, no .tmp- leftovers)
    assert sorted(set(before) - set(after)) == []  # nothing deleted
    assert sorted(p for p in before if before[p] != after[p]) == []  # nothing changed


def test_debug_shows_the_traceback(tmp_path):
    argv = ["tools/train.py", "-c", "missing.yaml"]
    flag = _run(str(tmp_path), argv + ["--debug"])
    env = _run(str(tmp_path), argv, {"PPFLUX_DEBUG": "1"})
    for run in (flag, env):
        assert "Traceback" in run.stderr and "FileNotFoundError" in run.stderr and run.returncode == 1


# ---------------------------------------------------------------- in-process: the rules behind the table
def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(capsys):
    def bug(argv):
        return {}["missing"]

    def mistake(argv):
        raise UserError("--steps must be >= 1, got 0\n(second line)")

    with pytest.raises(KeyError):
        cli.run(bug, [])
    assert cli.run(mistake, []) == 2
    assert capsys.readouterr().err == "error: --steps must be >= 1, got 0 (second line)\n"


def test_overrides_take_both_styles_mixed():
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_overrides(parser)
    parser.add_argument("-c")
    args = parser.parse_args(["-o", "a=1", "b=2", "-c", "x.yaml", "-o", "c=3", "-o", "d.e=[1, 2]"])
    assert args.override == ["a=1", "b=2", "c=3", "d.e=[1, 2]"] and args.c == "x.yaml"
    assert parser.parse_args([]).override == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_modes_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic.atomic_file(str(tmp_path / "a.bin")) as tmp, open(tmp, "wb") as f:
            f.write(b"x")
        with atomic.atomic_dir(str(tmp_path / "d")) as tmp:
            with open(os.path.join(tmp, "f"), "w") as f:
                f.write("x")
        with open(str(tmp_path / "plain.bin"), "wb") as f:
            f.write(b"x")
        os.makedirs(str(tmp_path / "plain_dir"))
    finally:
        os.umask(old)
    mode = lambda name: os.stat(tmp_path / name).st_mode & 0o777  # noqa: E731
    assert mode("a.bin") == mode("plain.bin") == 0o666 & ~umask
    assert mode("d") == mode("plain_dir") == 0o777 & ~umask


def test_atomic_dir_replaces_only_our_folder_and_only_when_asked(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with atomic.atomic_dir(str(out), marker="export") as tmp:
        open(os.path.join(tmp, "a"), "w").close()
    ours = lambda p: atomic.has_marker(p, "export")  # noqa: E731
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        with atomic.atomic_dir(str(out), ours=ours):
            raise AssertionError("not reached: refused before the work")
    with atomic.atomic_dir(str(out), overwrite=True, ours=ours, marker="export") as tmp:
        open(os.path.join(tmp, "b"), "w").close()
    assert sorted(os.listdir(out)) == [atomic.MARKER, "b"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cases = [(foreign, "was not written by ppflux_lightning"), (tmp_path / "file.txt", "is not a folder"),
             (tmp_path, "working directory"), (foreign / "sub", "is inside")]
    for path, message in cases:
        with pytest.raises(OutputExistsError, match=message):
            with atomic.atomic_dir(str(path), overwrite=True, ours="deploy.yaml", protect=[str(foreign)]
                                   if path == foreign / "sub" else ()):
                pass
    assert (foreign / "keep.txt").read_text() == "mine" and (tmp_path / "file.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic.atomic_dir(str(empty)) as tmp:  # an empty folder holds nothing to lose
        open(os.path.join(tmp, "c"), "w").close()
    assert os.listdir(empty) == ["c"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith((".tmp-", ".old-"))]


# ---------------------------------------------------------------- data errors, empty caches, divergence
def _all_bad_folder(folder, count=3, size=32):
    """Images without caption files: every record is bad."""
    os.makedirs(folder)
    for i in range(count):
        _png(os.path.join(folder, f"{i}.png"), size)
    return folder


@pytest.mark.parametrize("workers", [0, 1])
def test_a_loader_error_reaches_the_main_process(tmp_path, workers):
    from ppflux_lightning.data import GlobalBatchSampler, build_dataset
    from ppflux_lightning.data.loader import load_batches
    from ppflux_lightning.engine.batch import collate
    from ppflux_lightning.utils.errors import DataError

    folder = _all_bad_folder(str(tmp_path / "bad"))
    dataset = build_dataset({"type": "folder", "path": folder, "resolution": 32})
    with pytest.raises(DataError, match="all 3 records of the FolderDataset at .* are bad"):
        list(load_batches(dataset, GlobalBatchSampler(len(dataset), 1), collate, workers))


def test_an_empty_embedding_cache_is_an_error(tmp_path):
    from ppflux_lightning.data import build_dataset
    from ppflux_lightning.data.cached import FORMAT, INDEX_FILE, VERSION, write_cache
    from ppflux_lightning.utils.errors import DataError

    folder = _all_bad_folder(str(tmp_path / "bad"))
    source = {"type": "folder", "path": folder, "resolution": 32}
    out = str(tmp_path / "cache")
    with pytest.raises(DataError, match="all 3 records .* are bad .* nothing cached"):
        write_cache(lambda captions, pixels: {}, build_dataset(source), out, source)
    assert not os.path.exists(out)  # the folder it created is gone again
    os.makedirs(out)
    with open(os.path.join(out, INDEX_FILE), "w") as f:
        json.dump({"format": FORMAT, "version": VERSION, "has_latents": True, "source": source, "shards": []}, f)
    with pytest.raises(DataError, match="holds no samples"):
        build_dataset({"type": "cached", "path": out, "resolution": 32})


@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory):
    from train_fixtures import build_cached_dataset, build_pretrained

    root = tmp_path_factory.mktemp("diverge")
    return str(build_pretrained(str(root / "pretrained"))), build_cached_dataset(str(root / "data"), count=8)


def _finite_checkpoint(out, step):
    from ppflux_lightning.engine import checkpoint as ckpt

    _, tensors = ckpt.load_checkpoint(ckpt.checkpoint_path(out, step))
    return all(np.isfinite(v).all() for v in tensors["lora"].values())


def test_nan_learning_rate_stops_training_and_keeps_the_last_checkpoint(tiny_training, tmp_path):
    from train_fixtures import tiny_train_config

    from ppflux_lightning.engine import checkpoint as ckpt
    from ppflux_lightning.engine.trainer import FINAL_LORA, Trainer, TrainingDiverged

    pre, data = tiny_training
    out = str(tmp_path / "run")
    Trainer(tiny_train_config(pre, data, out, **{"train.max_steps": 2})).train()
    # the command line refuses lr=nan up front; the library run must still stop at the first poisoned update
    # (step 3, the first generator step after the resume: the discriminator has its own learning rate)
    bad = Trainer(tiny_train_config(pre, data, out, **{"train.max_steps": 4, "train.lr": float("nan")}),
                  resume="latest")
    with pytest.raises(TrainingDiverged, match=r"became NaN or inf at step 3 \(generator step"):
        bad.train()
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2] and _finite_checkpoint(out, 2)
    assert os.path.isfile(os.path.join(out, FINAL_LORA))  # the first run's, not overwritten by NaNs
    from ppflux_lightning.utils.safetensors_io import load_file

    assert all(np.isfinite(v).all() for v in load_file(os.path.join(out, FINAL_LORA)).values())


def test_a_poisoned_batch_stops_training_and_keeps_the_last_checkpoint(tiny_training, tmp_path):
    from train_fixtures import tiny_train_config

    from ppflux_lightning.engine import checkpoint as ckpt
    from ppflux_lightning.engine.trainer import FINAL_LORA, Trainer, TrainingDiverged

    pre, data = tiny_training
    out = str(tmp_path / "run")
    trainer = Trainer(tiny_train_config(pre, data, out, **{"train.max_steps": 6, "train.checkpoint_every": 2}))
    load = trainer.dataset.load
    poisoned = int(trainer.sampler.global_order().reshape(-1, 2)[3][0])  # a sample of step 3's batch

    def load_with_nan(index):
        sample = load(index)
        if index == poisoned:
            sample["prompt_embeds"] = np.full_like(sample["prompt_embeds"], np.nan)
        return sample

    trainer.dataset.load = load_with_nan
    with pytest.raises(TrainingDiverged, match="at step 3"):
        trainer.train()
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2] and _finite_checkpoint(out, 2)
    assert not os.path.exists(os.path.join(out, FINAL_LORA))


def test_a_prompt_longer_than_the_encoders_read_is_announced(capsys):
    from types import SimpleNamespace

    from paddlenlp.transformers import CLIPTokenizer, T5Tokenizer

    pipe = SimpleNamespace(tokenizer=CLIPTokenizer.from_pretrained(os.path.join(TOY, "tokenizer")),
                           tokenizer_2=T5Tokenizer.from_pretrained(os.path.join(TOY, "tokenizer_2")),
                           default_max_sequence_length=16)
    capsys.readouterr()  # whatever importing paddle printed
    cli.warn_truncation(pipe, ["a red circle"])
    assert "warning:" not in capsys.readouterr().err
    cli.warn_truncation(pipe, ["a red circle at the top left and a blue square at the bottom right and a green "
                              "triangle in the middle of the image"])  # 41 toy T5 tokens
    assert "T5 tokens; only the first 16 are used" in capsys.readouterr().err


def test_corrupt_checkpoint_and_graph_files_name_themselves(tmp_path):
    from ppflux_lightning.engine import checkpoint as ckpt
    from ppflux_lightning.export.predictor import StaticGraph
    from ppflux_lightning.utils.errors import CheckpointError, InputFileError

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / ckpt.STATE_FILE).write_text('{"step": 2')
    with pytest.raises(InputFileError, match=r"trainer_state.json' is not valid JSON"):
        ckpt.load_checkpoint(str(folder))
    (folder / ckpt.STATE_FILE).write_text('{"step": 2}')
    (folder / ckpt.RNG_FILE).write_bytes(b"\x80\x04\x95")  # a pickle cut after its header
    with pytest.raises(InputFileError, match=r"rng_state.pkl' is truncated or corrupt"):
        ckpt.load_checkpoint(str(folder))
    graph = tmp_path / "transformer"
    graph.mkdir()
    (graph / "model.json").write_text("{}")
    (graph / "model.pdiparams").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"cannot load the exported graph in '.*transformer'"):
        StaticGraph(str(graph))
