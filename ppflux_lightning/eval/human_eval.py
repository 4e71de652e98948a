"""Human evaluation kit: one self-contained rating page per study, and the aggregation of reviewers' CSV files.

`make_page` inlines every image (base64) into a single HTML file; each prompt shows the models' samples side by
side in a seeded random order under anonymous ids (m1, m2, ...). The id -> model name key is written to a separate
JSON file that the organiser keeps. Reviewers rate every sample 1-10 and press "Export CSV", which downloads
`reviewer,prompt_index,prompt,model,score` rows (also shown in a text box); `aggregate` turns several such files into
per-model averages and a ranking.
"""

import base64
import csv
import html
import io
import json
import os
import statistics

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_file
from ..utils.errors import InputFileError
from .image_io import list_images

CSV_COLUMNS = ("reviewer", "prompt_index", "prompt", "model", "score")
SCALE = (1, 10)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; }
.prompt { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 1em 0; padding: 0.8em; }
.prompt h2 { font-size: 1.05em; margin: 0 0 0.6em 0; }
.samples { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; text-align: center; }
figure img { display: block; image-rendering: pixelated; border: 1px solid #ccc; }
#status { margin-left: 1em; color: #555; }
textarea { width: 100%; height: 8em; font-family: monospace; }
"""

# The page's script: restores ratings saved in this browser, saves on change, exports CSV (download + text box).
_SCRIPT = """
(function () {
  var storeKey = "human-eval:" + document.body.dataset.study;
  var selects = Array.prototype.slice.call(document.querySelectorAll("select.rating"));
  var reviewer = document.getElementById("reviewer");
  var saved = {};
  try { saved = JSON.parse(localStorage.getItem(storeKey) || "{}"); } catch (e) { saved = {}; }
  function key(s) { return s.dataset.prompt + "/" + s.dataset.model; }
  function save() {
    var state = {reviewer: reviewer.value, ratings: {}};
    selects.forEach(function (s) { if (s.value) state.ratings[key(s)] = s.value; });
    try { localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) {}
    var done = selects.filter(function (s) { return s.value; }).length;
    document.getElementById("status").textContent = done + " of " + selects.length + " samples rated";
  }
  if (saved.reviewer) reviewer.value = saved.reviewer;
  selects.forEach(function (s) {
    if (saved.ratings && saved.ratings[key(s)]) s.value = saved.ratings[key(s)];
    s.addEventListener("change", save);
  });
  reviewer.addEventListener("input", save);
  function cell(v) { v = String(v); return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  document.getElementById("export").addEventListener("click", function () {
    var name = reviewer.value.trim();
    if (!name) { document.getElementById("status").textContent = "enter your name first"; return; }
    var rows = ["reviewer,prompt_index,prompt,model,score"];
    selects.forEach(function (s) {
      if (s.value) rows.push([name, s.dataset.prompt, s.dataset.text, s.dataset.model, s.value].map(cell).join(","));
    });
    var text = rows.join("\\n") + "\\n";
    document.getElementById("csv").textContent = text;  // a read-only box: its value follows its text
    var link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
    link.download = "ratings-" + name.replace(/[^A-Za-z0-9_-]+/g, "_") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  });
  save();
})();
"""


def _data_uri(path):
    """PNG/JPEG bytes inlined as they are; other formats re-encoded as PNG. A file that is no image is an error."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, ValueError, SyntaxError) as e:
        raise InputFileError(f"{path!r} is not a readable image ({e})") from None
    lower = path.lower()
    if lower.endswith(".png") or lower.endswith((".jpg", ".jpeg")):
        mime = "image/png" if lower.endswith(".png") else "image/jpeg"
        with open(path, "rb") as f:
            data = f.read()
    else:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, format="PNG")
        mime, data = "image/png", buffer.getvalue()
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def make_page(models, prompts, out_path, seed=0, display_size=256, title="Image quality study"):
    """Write the rating page and its key file (`<out>.key.json`); returns the key `{anonymous id: model name}`.

    `models` maps a model name to a folder holding one image per prompt (sorted file order = prompt order).
    """
    if len(models) < 2:
        raise InputFileError(f"a comparison needs at least 2 models, got {len(models)}")
    if not prompts:
        raise InputFileError("no prompts to rate")
    images = {}
    for name, folder in models.items():
        paths = list_images(folder)
        if len(paths) < len(prompts):
            raise InputFileError(f"model {name!r}: {folder} holds {len(paths)} images for {len(prompts)} prompts")
        images[name] = paths[: len(prompts)]
    rng = np.random.default_rng(seed)
    names = list(models)
    anonymous = {name: f"m{i + 1}" for i, name in enumerate(rng.permutation(names))}
    study = f"{title}-{seed}-{len(prompts)}-{len(names)}"
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head>",
             f"<body data-study='{html.escape(study, quote=True)}'><h1>{html.escape(title)}</h1>",
             f"<p>Rate every image from {SCALE[0]} (worst) to {SCALE[1]} (best) for quality and how well it follows "
             "its prompt. Samples are anonymous and shuffled per prompt. Your ratings are kept in this browser; "
             "press <b>Export CSV</b> when done and send the file back.</p>",
             "<p><label>Your name: <input id='reviewer' type='text'></label></p>"]
    options = "<option value=''>-</option>" + "".join(f"<option>{v}</option>" for v in range(SCALE[0], SCALE[1] + 1))
    for index, prompt in enumerate(prompts):
        text = html.escape(prompt, quote=True)
        parts.append(f"<div class='prompt' id='p{index}'><h2>{index + 1}. {html.escape(prompt)}</h2>"
                     "<div class='samples'>")
        for position, name in enumerate(rng.permutation(names), start=1):
            model_id = anonymous[name]
            parts.append(
                f"<figure><img src='{_data_uri(images[name][index])}' width='{display_size}' "
                f"height='{display_size}' alt='sample {position}'><figcaption>Sample {position}: "
                f"<select class='rating' data-prompt='{index}' data-model='{model_id}' data-text='{text}'>"
                f"{options}</select></figcaption></figure>")
        parts.append("</div></div>")
    parts.append("<p><button id='export' type='button'>Export CSV</button><span id='status'></span></p>"
                 "<textarea id='csv' readonly placeholder='the exported CSV appears here'></textarea>"
                 f"<script>{_SCRIPT}</script></body></html>\n")
    with atomic_file(out_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(parts))
        os.chmod(tmp, 0o644)  # the page is meant to be shared
    key = {model_id: name for name, model_id in sorted(anonymous.items(), key=lambda item: item[1])}
    with atomic_file(key_path(out_path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(key, f, indent=2)
    return key


def key_path(page_path):
    """Where `make_page` writes the anonymous-id -> model key for a page."""
    return os.path.splitext(page_path)[0] + ".key.json"


def read_ratings(paths):
    """Rows of several exported CSV files; a later file's rating of the same (reviewer, prompt, model) wins."""
    ratings = {}
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ratings file not found: {path}")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputFileError(f"{path} lacks the column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                try:
                    score = float(row["score"])
                except ValueError:
                    raise InputFileError(f"{path}:{line}: score {row['score']!r} is not a number") from None
                if not SCALE[0] <= score <= SCALE[1]:
                    raise InputFileError(f"{path}:{line}: score {row['score']!r} is outside {SCALE[0]}-{SCALE[1]}")
                ratings[(row["reviewer"], row["prompt_index"], row["model"])] = score
    if not ratings:
        raise InputFileError("the ratings files hold no ratings")
    return [{"reviewer": r, "prompt_index": p, "model": m, "score": s} for (r, p, m), s in ratings.items()]


def aggregate(rows, key=None):
    """Per-model mean (over all ratings), spread, per-reviewer means and rank (1 = best); models renamed by `key`."""
    unknown = sorted({row["model"] for row in rows} - set(key)) if key else []
    if unknown:
        raise InputFileError(f"the ratings name model id(s) {unknown} that the key does not list ({sorted(key)}): "
                             "wrong key file for these ratings?")
    key = key or {}
    by_model = {}
    for row in rows:
        name = key.get(row["model"], row["model"])
        by_model.setdefault(name, {}).setdefault(row["reviewer"], []).append(row["score"])
    results = []
    for name, reviewers in by_model.items():
        scores = [s for values in reviewers.values() for s in values]
        results.append({
            "model": name,
            "mean": statistics.fmean(scores),
            "std": statistics.pstdev(scores),
            "ratings": len(scores),
            "reviewers": {r: statistics.fmean(v) for r, v in sorted(reviewers.items())},
        })
    results.sort(key=lambda r: (-r["mean"], r["model"]))
    for rank, result in enumerate(results, start=1):
        result["rank"] = rank
    return results


def markdown_table(results):
    """The ranking as a markdown table, one column per reviewer."""
    reviewers = sorted({r for result in results for r in result["reviewers"]})
    lines = ["| rank | model | mean | std | ratings | " + " | ".join(reviewers) + " |",
             "|---:|---|---:|---:|---:|" + "---:|" * len(reviewers)]
    for r in results:
        per = " | ".join(f"{r['reviewers'][name]:.2f}" if name in r["reviewers"] else "-" for name in reviewers)
        lines.append(f"| {r['rank']} | {r['model']} | {r['mean']:.2f} | {r['std']:.2f} | {r['ratings']} | {per} |")
    return "\n".join(lines) + "\n"
