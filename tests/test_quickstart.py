"""The quickstart end to end on a random tiny pipeline, and its building blocks against the toy task's ground truth."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from ppflux_lightning.toy import quickstart as qs
from ppflux_lightning.toy import task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import quickstart as quickstart_tool  # noqa: E402  (tools/quickstart.py)

TINY_SIZE = 32


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def tiny_toy(tmp_path_factory):
    """The random tiny pipeline plus the `toy_world.json` a built toy model carries (32 px, 16 T5 tokens)."""
    from ppflux_lightning.pipelines.tiny import build_tiny_pipeline

    path = str(tmp_path_factory.mktemp("tiny") / "pipe")
    build_tiny_pipeline(path)
    with open(os.path.join(path, "toy_world.json"), "w") as f:
        json.dump({"image_size": TINY_SIZE, "max_sequence_length": 16, "guidance_scale": 3.5,
                   "num_inference_steps": 50}, f)
    return path


def test_quickstart_smoke_end_to_end_and_rerun_skips_training(tiny_toy, tmp_path, capsys):
    out = str(tmp_path / "qs")
    argv = ["--smoke", "--model", tiny_toy, "--out", out, "--eval-prompts", "6"]
    assert quickstart_tool.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("student@4: validity") and "FID-to-teacher" in summary and "report.md" in summary

    result = json.loads(read(os.path.join(out, "results.json")))
    assert list(result["rows"]) == ["teacher@50", "teacher@4", "student@4"]
    for name, row in result["rows"].items():
        assert 0.0 <= row["validity"] <= 100.0 and 0.0 <= row["adherence"] <= 100.0 and row["seconds_per_image"] > 0
        if name != "teacher@50":
            assert np.isfinite(row["fid_to_teacher"]) and row["fid_to_teacher"] >= 0
            assert 0 < row["psnr_vs_teacher"] <= 100
    # 2 generator steps of the full recipe: D and G alternate, so 4 optimizer steps
    assert os.path.isdir(os.path.join(out, "student", "checkpoint-4"))
    assert os.path.isfile(os.path.join(out, "student", qs.FINAL_LORA))
    with Image.open(os.path.join(out, "grid.png")) as grid:  # 3 rows of 4 columns at 2x, plus the label strip
        assert grid.size == (96 + 4 * 2 * TINY_SIZE, 3 * 2 * TINY_SIZE)
    report = read(os.path.join(out, "report.md"))
    for name in result["rows"]:
        assert f"| {name} |" in report

    marker = os.path.join(out, "student", qs.RUN_MARKER)
    before = os.path.getmtime(marker)
    assert quickstart_tool.main(argv) == 0
    assert "finished earlier with the same config, skipped" in capsys.readouterr().out
    assert os.path.getmtime(marker) == before
    with open(marker) as f:  # the teacher and the data are part of what makes a run "the same"
        assert "# inputs: model " in json.load(f)["config"]


def test_fingerprints_follow_the_files_and_the_task(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "weights.bin").write_bytes(b"1234")
    first = qs.folder_fingerprint(str(folder))
    assert qs.folder_fingerprint(str(folder)) == first and len(first) == 16
    os.utime(folder / "transformer" / "weights.bin", ns=(10**9, 10**9))  # rewritten (a rebuilt toy model)
    second = qs.folder_fingerprint(str(folder))
    assert second != first
    (folder / "transformer" / "extra.json").write_text("{}")  # a file added
    assert qs.folder_fingerprint(str(folder)) not in (first, second)

    assert task.fingerprint() == task.fingerprint() and len(task.fingerprint()) == 16
    data = str(tmp_path / "data")
    qs.write_train_data(data, 4, 24, seed=0)
    monkeypatch.setattr(task, "fingerprint", lambda: "another-task")  # same count, size and seed, another task
    qs.write_train_data(data, 4, 24, seed=0)
    with open(os.path.join(data, qs.DATA_MARKER)) as f:
        assert json.load(f)["task"] == "another-task"  # re-rendered, not reused


def test_missing_model_folder_is_one_line_error(tmp_path, capsys):
    (tmp_path / "not_a_model").mkdir()
    code = quickstart_tool.main(["--smoke", "--model", str(tmp_path / "not_a_model"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "model_index.json" in err[-1]


def test_train_data_is_seeded_train_split_and_reused(tmp_path):
    folder = str(tmp_path / "data")
    qs.write_train_data(folder, 12, 24, seed=3)
    captions = [read(os.path.join(folder, f"{i:05d}.txt")).strip() for i in range(12)]
    images, expected = task.sample_dataset(12, 24, seed=3, split="train")
    assert captions == expected
    assert np.array_equal(np.asarray(Image.open(os.path.join(folder, "00005.png"))), images[5])
    assert not any(task.names_held_out(s) for c in captions for s in task.parse_caption(c))
    stamp = os.path.getmtime(os.path.join(folder, "00000.png"))
    qs.write_train_data(folder, 12, 24, seed=3)  # same spec: kept
    assert os.path.getmtime(os.path.join(folder, "00000.png")) == stamp
    qs.write_train_data(folder, 8, 24, seed=3)  # new spec: replaced
    assert not os.path.exists(os.path.join(folder, "00008.png"))
    with pytest.raises(ValueError, match="count"):
        qs.write_train_data(folder, 0, 24)


def test_eval_prompts_are_the_task_eval_set_and_checked():
    prompts, seeds = qs.eval_prompt_set(10)
    assert prompts == task.eval_prompts(10) and seeds == list(range(10))
    with pytest.raises(ValueError, match="eval prompt count"):
        qs.eval_prompt_set(0)


def test_scores_on_ground_truth_images():
    """Clean renders of the prompts are valid and adhere 100%; against themselves FID is 0 and PSNR hits the 100 dB
    cap; against a copy darkened by 10% PSNR matches the closed form 10 log10(1 / MSE)."""
    prompts, _ = qs.eval_prompt_set(12)
    rng = np.random.default_rng(0)
    images = np.stack([task.render(task.draw_scene(task.parse_caption(p), rng), 48, rng)
                       for p in prompts]).astype(np.float64) / 255

    def features(batch):  # a fixed random projection stands in for the feature network
        flat = np.asarray(batch, np.float64).reshape(len(batch), -1)
        return flat @ np.random.default_rng(1).standard_normal((flat.shape[1], 6))

    same = qs.score_images(images, prompts, images, features)
    assert same["validity"] == 100.0 and same["adherence"] == 100.0
    assert same["fid_to_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert same["psnr_vs_teacher"] == 100.0
    darker = images * 0.9
    scored = qs.score_images(darker, prompts, images, features)
    mse = ((darker - images) ** 2).mean(axis=(1, 2, 3))
    assert scored["psnr_vs_teacher"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-9)
    assert scored["fid_to_teacher"] > 0


def test_stale_checkpoints_of_another_config_are_discarded(tmp_path):
    from ppflux_lightning.engine.checkpoint import STATE_FILE

    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / STATE_FILE).write_text("{}")
    (out / "config.yaml").write_text("train: {lr: 0.001}\n")
    qs.discard_stale_checkpoints(str(out), "train: {lr: 0.001}\n")  # same config: resumable, kept
    assert (out / "checkpoint-4").is_dir()
    qs.discard_stale_checkpoints(str(out), "train: {lr: 0.0001}\n")
    assert not (out / "checkpoint-4").exists()


def test_toy_sampler_bench_smoke_and_bad_input(tiny_toy, tmp_path, capsys):
    from script_loader import load_script

    bench = load_script("bench/bench_toy_sampler.py")
    out = str(tmp_path / "sampler")
    assert bench.main(["--model", tiny_toy, "--steps", "1,2", "--per-level", "1", "--mu", "pipeline,1.15",
                       "--out", out]) == 0
    result = json.loads(read(os.path.join(out, "results.json")))
    assert result["per_level"] == 1 and result["prompts"] == 4
    assert [r["setting"] for r in result["rows"]] == ["1 steps, g 3.5, mu pipeline", "2 steps, g 3.5, mu pipeline",
                                                      "1 steps, g 3.5, mu 1.15", "2 steps, g 3.5, mu 1.15"]
    for row in result["rows"]:  # every image is valid or counted invalid, with at least one reason
        assert 0 <= row["invalid"] <= 4 and (row["invalid"] == 0) == (sum(row["failures"].values()) == 0)
        assert row["validity"] == pytest.approx(100 * (4 - row["invalid"]) / 4)
    report = read(os.path.join(out, "results.md"))
    assert "`task.level_balanced_prompts(1)`, seeds 0-3" in report and os.path.isfile(os.path.join(out, "grid.png"))
    capsys.readouterr()
    assert bench.main(["--model", tiny_toy, "--per-level", "0", "--out", out]) == 2
    assert capsys.readouterr().err.strip() == ("error: --steps, --prompts and --per-level must be >= 1, got '4,50' / "
                                               "384 / 0")


def test_teacher_schedule_bench_reads_runs_and_reports_levels(tmp_path, capsys):
    from script_loader import load_script

    from ppflux_lightning.toy.train_teacher import TeacherSchedule

    bench = load_script("bench/bench_teacher_schedule.py")
    assert bench.parse_runs("64:2e-3,32:4e-3:pipeline,16:1e-3:0.5:8") == [
        (64, 2e-3, TeacherSchedule.sigma_mu, 1), (32, 4e-3, None, 1), (16, 1e-3, 0.5, 8)]
    for bad in ("32", "32:4e-3:1.15:8:1", "0:4e-3", "32:-1", "32:4e-3:1.15:0", "32:4e-3:x"):
        with pytest.raises(ValueError):
            bench.parse_runs(bad)
    scores = {"validity": 50.0, "adherence_single": 75.0, "coverage_tv_color": 0.1, "coverage_tv_shape": None,
              "coverage_tv_position": 0.25}
    levels = {"validity": 40.0, **{f"validity_level{k}": 10.0 * k for k in range(4)},
              **{f"adherence_level{k}": None if k == 0 else 90.0 for k in range(4)}}
    row = {"batch": 32, "lr": 4e-3, "mu": 1.15, "captions_per_image": 8, "steps": 100, "train_seconds": 12.3,
           "prompts": 288, "teacher@50": scores, "teacher@4": scores, "per_level": 96, "levels@50": levels,
           "levels@4": levels}
    text = bench.markdown([row], 3200, "assets/toy/flux-toy")
    assert "| 32 | 0.004 | 1.15 | 8 | 100 | 12 | 50.0 | 50.0 | 75.0 | 0.100 / — / 0.250 |" in text
    assert "| batch 32, lr 0.004, mu 1.15, 8 captions | 0 / 10 / 20 / 30 (40.0) | 0 / 10 / 20 / 30 (40.0) | " \
           "— / 90 / 90 / 90 |" in text
    assert bench.main(["--runs", "32:4e-3:1.15:0", "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("error: --runs must be batch:lr[:mu[:K]] (positive; mu a number or "
                                               "'pipeline', K an integer), got '32:4e-3:1.15:0'")
    assert bench.main(["--model", str(tmp_path / "nope"), "--samples", "64", "--runs", "8:1e-3"]) == 2
    assert "toy_world.json" in capsys.readouterr().err
