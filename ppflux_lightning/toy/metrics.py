"""Exact metrics of the toy task, read by `toy.detector` (no feature network):

- validity: the share of images that are clean scenes with the prompt's object count (precision-like);
- adherence: the share whose detected objects show every attribute the prompt names, over all prompts, over the
  one-object prompts and per level of specification of those (0 = "a shape" ... 3 = every attribute named);
  validity is reported per level too;
- coverage: for each attribute, over valid one-object images whose prompt leaves it open, the total-variation
  distance between the detected values and the uniform distribution the data draws them from (recall-like: a
  sampler that drops modes moves it up; None without such images). Its sampling floor with n images is about
  0.35 sqrt(K / n) for K values (`coverage_floor`).
"""

from __future__ import annotations

import numpy as np

from . import detector, task

ATTRIBUTE_VALUES = {"color": tuple(task.COLORS), "shape": task.SHAPES, "position": tuple(task.POSITIONS)}


def total_variation(values, support) -> float:
    """TV distance between the empirical distribution of `values` and the uniform one on `support` (None if empty)."""
    if len(values) == 0:
        return None
    counts = np.array([sum(v == s for v in values) for s in support], np.float64)
    if counts.sum() != len(values):
        raise ValueError(f"values outside the support {support}: {sorted(set(values) - set(support))}")
    return float(0.5 * np.abs(counts / counts.sum() - 1.0 / len(support)).sum())


def open_values(readings, specs, valid) -> dict:
    """attribute -> the detected values of the valid one-object images whose spec leaves it open (what coverage
    measures), from `detector.Reading`s, the prompts' parsed specs and their validity flags."""
    return {attribute: [getattr(r.objects[0], attribute) for r, s, ok in zip(readings, specs, valid)
                        if ok and len(s) == 1 and getattr(s[0], attribute) is None]
            for attribute in ATTRIBUTE_VALUES}


def task_scores(images, prompts, readings=None) -> dict:
    """Validity, adherence and coverage (percent / TV) of images sampled for `prompts` (one image per prompt);
    `readings` (their `detector.read`, if the caller has them) saves reading the images again."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if len(prompts) == 0:
        raise ValueError("no images to score")
    specs = [task.parse_caption(p) for p in prompts]
    readings = [detector.read(image) for image in images] if readings is None else readings
    valid = np.array([r.valid(len(s)) for r, s in zip(readings, specs)])
    hits = np.array([detector.adheres(None, p, r) for p, r in zip(prompts, readings)])
    single = np.array([len(s) == 1 for s in specs])
    out = {"validity": _percent(valid), "adherence": _percent(hits), "adherence_single": _percent(hits[single]),
           "validity_single": _percent(valid[single])}
    levels = np.array([s[0].level if len(s) == 1 else -1 for s in specs])
    for level in range(4):
        out[f"adherence_level{level}"] = _percent(hits[levels == level])
        out[f"validity_level{level}"] = _percent(valid[levels == level])
    tvs = []
    drawn = open_values(readings, specs, valid)
    for attribute, support in ATTRIBUTE_VALUES.items():
        seen = drawn[attribute]
        out[f"coverage_tv_{attribute}"] = total_variation(seen, support)
        out[f"coverage_n_{attribute}"] = len(seen)
        tvs.append(out[f"coverage_tv_{attribute}"])
    known = [tv for tv in tvs if tv is not None]
    out["coverage_tv"] = max(known) if known else None
    return out


def _percent(flags):
    return 100.0 * float(np.mean(flags)) if len(flags) else None


def coverage_floor(n, k) -> float:
    """Expected TV of n uniform draws over k values against the uniform (the sampling floor of `coverage_tv`)."""
    rng = np.random.default_rng(0)
    draws = rng.integers(0, k, size=(2000, n))
    counts = np.stack([(draws == i).sum(1) for i in range(k)], 1) / n
    return float(0.5 * np.abs(counts - 1.0 / k).sum(1).mean())
