"""Human evaluation kit: the page (rendered and exported in headless Chromium) and the aggregation."""

import csv
import html
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

from ppflux_lightning.eval import human_eval
from ppflux_lightning.eval.image_io import save_images, write_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ['a red circle, "quoted" and <b>bold</b>', "a blue square at the top", "a green triangle", "a cyan circle"]
MODELS = ("teacher", "student", "baseline")


def _tool():
    return load_script("tools/human_eval.py")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    args = []
    for shade, name in enumerate(MODELS):
        images = rng.integers(0, 256, size=(len(PROMPTS), 16, 16, 3), dtype=np.uint8) // (shade + 1)
        save_images(images, str(tmp_path / name))
        args.append(f"{name}={tmp_path / name}")
    write_prompts(PROMPTS, str(tmp_path / "prompts.txt"))
    page = str(tmp_path / "study.html")
    _tool().main(["make", "--models", *args, "--prompts", str(tmp_path / "prompts.txt"), "--out", page,
                  "--display-size", "64"])
    return page


def test_page_is_self_contained_anonymous_and_shuffled(study):
    text = _read(study)
    key = json.loads(_read(human_eval.key_path(study)))
    assert sorted(key.values()) == sorted(MODELS) and sorted(key) == ["m1", "m2", "m3"]
    sources = re.findall(r"<img src='([^']*)'", text)
    assert len(sources) == len(PROMPTS) * len(MODELS) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=['\"]?(https?:|file:)", text)
    for name in MODELS:
        assert name not in text  # only anonymous ids reach the page
    orders = [re.findall(r"data-model='(m\d)'", block) for block in text.split("class='prompt'")[1:]]
    assert all(sorted(o) == ["m1", "m2", "m3"] for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # shuffled per prompt
    assert html.escape(PROMPTS[0]) in text and "<b>bold</b>" not in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not found (Debian: apt-get install -y chromium)")


def _run_chromium(tmp_path, *args):
    # A fresh profile per run: a lingering browser process from the previous run must not hold its profile lock.
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=str(tmp_path))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    try:
        done = subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:  # a headless start that hangs (seen once in CI): retry once, fresh profile
        flags[-1] = f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-', dir=str(tmp_path))}"
        done = subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


FILL = """<script>
document.getElementById("reviewer").value = "%s";
document.querySelectorAll("select.rating").forEach(function (s) {
  s.value = String({m1: %d, m2: %d, m3: %d}[s.dataset.model] + Number(s.dataset.prompt) %% 2);
  s.dispatchEvent(new Event("change"));
});
document.getElementById("export").click();
</script></body>"""


def _export_in_browser(tmp_path, page, reviewer, base):
    """Fill the page like a reviewer (scripted), press Export CSV, read the CSV back from the rendered DOM."""
    filled = str(tmp_path / f"filled-{reviewer}.html")
    with open(page, encoding="utf-8") as f, open(filled, "w", encoding="utf-8") as out:
        out.write(f.read().replace("</body>", FILL % (reviewer, *base)))
    dom = _run_chromium(tmp_path, "--dump-dom", "file://" + filled)
    assert f"{len(PROMPTS) * len(MODELS)} of {len(PROMPTS) * len(MODELS)} samples rated" in dom
    box = re.search(r"<textarea id=\"csv\"[^>]*>(.*?)</textarea>", dom, re.S)
    assert box is not None, dom[-2000:]
    path = str(tmp_path / f"ratings-{reviewer}.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(html.unescape(box.group(1)))
    return path


def test_page_renders_and_exports_csv_in_headless_chromium(study, tmp_path):
    shot = str(tmp_path / "shot.png")
    _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=900,700", "file://" + study)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (700, 900) and pixels.std() > 10  # not a blank page

    first = _export_in_browser(tmp_path, study, "alice", (8, 5, 2))
    second = _export_in_browser(tmp_path, study, "bob", (6, 7, 3))
    with open(first, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(PROMPTS) * len(MODELS)
    assert {r["prompt"] for r in rows} == set(PROMPTS)  # commas, quotes and markup survive the CSV
    assert all(r["reviewer"] == "alice" for r in rows)

    key = json.loads(_read(human_eval.key_path(study)))
    results = {r["model"]: r for r in human_eval.aggregate(human_eval.read_ratings([first, second]), key)}
    # hand computation: every score is base + (prompt % 2); prompts 0..3 add 0.5 on average
    for model_id, (a, b) in {"m1": (8, 6), "m2": (5, 7), "m3": (2, 3)}.items():
        result = results[key[model_id]]
        assert result["mean"] == pytest.approx((a + b) / 2 + 0.5)
        assert result["reviewers"] == {"alice": a + 0.5, "bob": b + 0.5}
        assert result["ratings"] == 2 * len(PROMPTS)
    assert [results[key[m]]["rank"] for m in ("m1", "m2", "m3")] == [1, 2, 3]


def test_score_command_ranks_models_and_writes_json(tmp_path, capsys):
    ratings = tmp_path / "r.csv"
    rows = [("ann", 0, "p", "m1", 9), ("ann", 0, "p", "m2", 4), ("ben", 0, "p", "m1", 7), ("ben", 0, "p", "m2", 6)]
    with open(ratings, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(human_eval.CSV_COLUMNS)
        writer.writerows(rows)
    key = tmp_path / "k.json"
    key.write_text(json.dumps({"m1": "lightning", "m2": "schnell"}))
    out = tmp_path / "results.json"
    _tool().main(["score", str(ratings), "--key", str(key), "--json", str(out)])
    table = capsys.readouterr().out
    assert table.index("lightning") < table.index("schnell")
    results = json.loads(_read(out))
    assert [(r["model"], r["mean"], r["rank"]) for r in results] == [("lightning", 8.0, 1), ("schnell", 5.0, 2)]


def test_ratings_outside_the_scale_are_rejected(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("reviewer,prompt_index,prompt,model,score\nann,0,p,m1,11\n")
    with pytest.raises(ValueError, match="'11' is outside 1-10"):
        human_eval.read_ratings([str(bad)])
    missing = tmp_path / "missing.csv"
    missing.write_text("reviewer,model,score\nann,m1,5\n")
    with pytest.raises(ValueError, match="prompt_index"):
        human_eval.read_ratings([str(missing)])


def test_make_needs_an_image_per_prompt(tmp_path):
    save_images(np.zeros((2, 8, 8, 3), np.uint8), str(tmp_path / "a"))
    save_images(np.zeros((3, 8, 8, 3), np.uint8), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="holds 2 images for 3 prompts"):
        human_eval.make_page({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, ["x", "y", "z"],
                             str(tmp_path / "p.html"))
