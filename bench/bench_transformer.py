"""Forward latency of the Paddle FLUX transformer vs diffusers' (PyTorch) on identical weights, on the CPU.

    python bench/bench_transformer.py [--repeats 7] [--threads 2] [--configs tiny medium] [--profile]
                                      [--baseline /path/to/other/checkout]

Each configuration is timed in a child process (MKL_DEBUG_CPU_TYPE must be set before paddle is imported; on AMD
CPUs a second child measures without it). In one child, Paddle with separate projections (training layout), Paddle
with fused projections (`fuse_projections()`, the inference layout) and PyTorch run interleaved; medians and ratios
are printed as a markdown table, with the machine's load average. `--baseline` adds a column for another checkout's
`ppflux_lightning` (copied and imported under another name), timed in the same interleaved loop: before/after.
`--profile` instead prints, for the medium config, where Paddle's forward time goes by op family (timers around the
model's functions; see `profile_families`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "tiny": dict(model=dict(in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                            num_attention_heads=2, joint_attention_dim=40, pooled_projection_dim=24,
                            guidance_embeds=True, axes_dims_rope=[4, 6, 6]), grid=(8, 8), txt_len=16),
    "medium": dict(model=dict(in_channels=64, num_layers=4, num_single_layers=8, attention_head_dim=64,
                              num_attention_heads=12, joint_attention_dim=512, pooled_projection_dim=768,
                              guidance_embeds=True, axes_dims_rope=[8, 28, 28]), grid=(32, 32), txt_len=64),
}


def import_baseline(checkout):
    """Another checkout's package, copied to a temporary folder as `ppflux_baseline` (its imports are relative)."""
    import importlib
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="bench_baseline_")
    shutil.copytree(os.path.join(checkout, "ppflux_lightning"), os.path.join(root, "ppflux_baseline"))
    sys.path.insert(0, root)
    return importlib.import_module("ppflux_baseline.models")


def build(name, baseline=None):
    """(diffusers model, our model loaded from its saved folder, numpy inputs, baseline model or None)."""
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from torch_reference import image_ids, random_diffusers_transformer

    from ppflux_lightning.models import FluxTransformer2DModel

    spec = CONFIGS[name]
    ref = random_diffusers_transformer(spec["model"], seed=0, std=0.02)
    folder = f"/tmp/bench_transformer_{name}_{os.getpid()}"
    ref.save_pretrained(folder)
    ours = FluxTransformer2DModel.from_pretrained(folder)
    ours.eval()
    before = None
    if baseline:
        before = import_baseline(baseline).FluxTransformer2DModel.from_pretrained(folder)
        before.eval()
    h, w = spec["grid"]
    rng = np.random.default_rng(0)
    cfg = spec["model"]
    arrays = dict(
        hidden_states=rng.standard_normal((1, h * w, cfg["in_channels"])).astype(np.float32),
        encoder_hidden_states=rng.standard_normal((1, spec["txt_len"], cfg["joint_attention_dim"])).astype(np.float32),
        pooled_projections=rng.standard_normal((1, cfg["pooled_projection_dim"])).astype(np.float32),
        timestep=np.array([0.5], np.float32),
        img_ids=image_ids(h, w),
        txt_ids=np.zeros((spec["txt_len"], 3), np.float32),
        guidance=np.array([3.5], np.float32),
    )
    return ref, ours, arrays, before


def measure(name, repeats, threads, baseline=None):
    """Runs in the child: both models with the same weights, timed alternately."""
    import numpy as np
    import paddle
    import torch

    import ppflux_lightning  # noqa: F401  (MKL switch before paddle)

    torch.set_num_threads(threads)
    ref, ours, arrays, before = build(name, baseline)
    pd_in = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    th_in = {k: torch.tensor(v) for k, v in arrays.items()}

    def run_paddle(fused):
        (ours.fuse_projections if fused else ours.unfuse_projections)()
        with paddle.no_grad():
            return ours(**pd_in).numpy()

    def run_torch():
        with torch.no_grad():
            return ref(**th_in).sample.numpy()

    expected = run_torch()
    errors = {label: float(np.abs(run_paddle(fused) - expected).max() / np.abs(expected).max())
              for label, fused in (("separate", False), ("fused", True))}
    models = {"separate": ours, "fused": ours, "torch": None}
    if before is not None:
        models = {"baseline": before, **models}
        with paddle.no_grad():
            errors["baseline"] = float(np.abs(before(**pd_in).numpy() - expected).max() / np.abs(expected).max())
    times = {label: [] for label in models}
    for _ in range(repeats):
        for label, model in models.items():
            if model is ours:  # (un)fusing is a one-off cost at load time: done outside the timed region
                (ours.fuse_projections if label == "fused" else ours.unfuse_projections)()
            start = time.perf_counter()
            with paddle.no_grad(), torch.no_grad():
                out = model(**pd_in).numpy() if model is not None else ref(**th_in).sample.numpy()
            times[label].append(time.perf_counter() - start)
            del out
    return {
        **{f"{label}_ms": 1000 * statistics.median(t) for label, t in times.items()},
        **{f"{label}_err": e for label, e in errors.items()},
        "mkl_fix": os.environ.get("MKL_DEBUG_CPU_TYPE") == "5",
    }


# ---------------------------------------------------------------- profile
FAMILIES = {
    # family: [(module, attribute)] of functions/methods whose (exclusive) time counts for it
    "GEMMs (nn.Linear, fused projections)": [("paddle.nn.functional", "linear")],
    "attention (QK^T, softmax, PV, head transposes)": [("ppflux_lightning.models.attention", "attention")],
    "RoPE (tables, rotation)": [("ppflux_lightning.models.attention", "apply_rope"),
                                ("ppflux_lightning.models.embeddings", "rope_frequencies")],
    "norms + modulation (LayerNorm, AdaLN, RMSNorm, SiLU)": [
        ("ppflux_lightning.models.blocks", "modulate"), ("ppflux_lightning.models.blocks", "layer_norm"),
        ("ppflux_lightning.models.attention.RMSNorm", "forward"), ("paddle.nn.functional", "silu")],
    "GELU": [("paddle.nn.functional", "gelu")],
    "gated residuals": [("ppflux_lightning.models.blocks", "gated")],
    "copies (concat, split)": [("paddle", "concat"), ("paddle", "split")],
}
# Families whose nested calls (a concat inside attention, a matmul inside RoPE) count for the family itself.
ABSORBING = ("attention", "RoPE")


def profile_families(name, repeats, threads, fused):
    """Time Paddle's forward by op family: every function in FAMILIES is wrapped in a timer that records its time
    minus that of wrapped functions it calls; "other" is the forward's remaining time (embeddings, reshapes, the
    block loop). Also counts the Paddle ops one forward dispatches and the dispatch cost of one small op."""
    import importlib

    import paddle

    import ppflux_lightning  # noqa: F401

    _, ours, arrays, _ = build(name)
    if fused:
        ours.fuse_projections()
    pd_in = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    totals = {family: 0.0 for family in FAMILIES}
    stack = []

    def wrap(family, fn):
        def timed(*args, **kwargs):
            if stack and stack[-1][0].split(" ")[0] in ABSORBING:
                return fn(*args, **kwargs)
            stack.append([family, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                fam, start, nested = stack.pop()
                elapsed = time.perf_counter() - start
                totals[fam] += elapsed - nested
                if stack:
                    stack[-1][2] += elapsed

        return timed

    for family, targets in FAMILIES.items():
        for module_name, attr in targets:
            owner_name, _, cls = module_name.rpartition(".")
            if cls and cls[0].isupper():
                owner = getattr(importlib.import_module(owner_name), cls)
            else:
                owner = importlib.import_module(module_name)
            original = getattr(owner, attr)
            setattr(owner, attr, wrap(family, original))
            # functions imported by name into the model modules
            for mod in [m for k, m in sys.modules.items() if k.startswith("ppflux_lightning.models") and m]:
                if mod is not owner and getattr(mod, attr, None) is original:
                    setattr(mod, attr, getattr(owner, attr))

    def forward():
        with paddle.no_grad():
            return ours(**pd_in).numpy()

    forward()
    runs = []
    for _ in range(repeats):
        for family in totals:
            totals[family] = 0.0
        start = time.perf_counter()
        forward()
        runs.append((time.perf_counter() - start, dict(totals)))
    total, parts = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run

    import paddle.profiler as profiler

    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU])
    prof.start()
    forward()
    prof.stop()
    n_ops = _count_ops(prof)
    small = paddle.ones([4])
    start = time.perf_counter()
    for _ in range(2000):
        small = small + 1.0
    dispatch = (time.perf_counter() - start) / 2000
    return {"total_ms": 1000 * total, "parts_ms": {k: 1000 * v for k, v in parts.items()}, "ops": n_ops,
            "dispatch_us": 1e6 * dispatch, "fused": fused}


def _count_ops(prof):
    """The number of Paddle operators in a profiled run."""
    from paddle.profiler.profiler_statistic import TracerEventType

    nodes, count = list(prof.profiler_result.get_data().values()), 0
    while nodes:
        node = nodes.pop()
        count += node.type == TracerEventType.Operator
        nodes.extend(node.children_node)
    return count


def print_profile(result):
    total = result["total_ms"]
    parts = result["parts_ms"]
    overhead = result["ops"] * result["dispatch_us"] / 1000
    print(f"Paddle dygraph forward, {'fused' if result['fused'] else 'separate'} projections: {total:.0f} ms "
          f"(median run); {result['ops']} Paddle ops, {result['dispatch_us']:.1f} us to dispatch a small op")
    print("| op family | ms | share |")
    print("|---|---|---|")
    for family, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {family} | {ms:.1f} | {100 * ms / total:.1f}% |")
    other = total - sum(parts.values())
    print(f"| other (embeddings, reshapes, block loop) | {other:.1f} | {100 * other / total:.1f}% |")
    print(f"| of all the above: op dispatch (ops x dispatch cost) | {overhead:.1f} | {100 * overhead / total:.1f}% |")


def child_env(threads, mkl_fix):
    # Passive OpenMP waiting: otherwise Paddle's idle spinning threads steal the cores from PyTorch's turn.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "KMP_BLOCKTIME": "0", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("MKL_DEBUG_CPU_TYPE", None)
    env["PPFLUX_NO_MKL_FIX"] = "0" if mkl_fix else "1"
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--profile", action="store_true", help="op-family breakdown of Paddle's medium forward")
    parser.add_argument("--baseline", help="another checkout (folder holding ppflux_lightning/) to time alongside")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", choices=["separate", "fused"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child_profile:
            result = profile_families(args.child, args.repeats, args.threads, args.child_profile == "fused")
        else:
            result = measure(args.child, args.repeats, args.threads, args.baseline)
        print(json.dumps(result))
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ppflux_lightning.utils.cpu import is_amd_cpu

    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, {args.threads} threads each; load average before: "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.profile:
        for mode in ("separate", "fused"):
            out = subprocess.run([sys.executable, __file__, "--child", "medium", "--child-profile", mode, "--repeats",
                                  str(args.repeats), "--threads", str(args.threads)],
                                 env=child_env(args.threads, True), capture_output=True, text=True, check=True)
            print_profile(json.loads(out.stdout.strip().splitlines()[-1]))
            print()
        return
    rows = []
    for name in args.configs:
        for mkl_fix in (True, False) if is_amd_cpu() else (True,):
            extra = ["--baseline", os.path.abspath(args.baseline)] if args.baseline else []
            out = subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(args.repeats),
                                  "--threads", str(args.threads), *extra], env=child_env(args.threads, mkl_fix),
                                 capture_output=True, text=True, check=True)
            rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    labels = (["baseline"] if args.baseline else []) + ["separate", "fused"]
    names = {"baseline": "baseline", "separate": "paddle separate", "fused": "paddle fused"}
    print(f"| config | MKL_DEBUG_CPU_TYPE=5 | {' | '.join(names[k] + ' ms' for k in labels)} | torch ms | "
          f"{' | '.join(k + ' / torch' for k in labels)} | max rel err ({', '.join(labels)}) |")
    print("|---" * (4 + 2 * len(labels)) + "|")
    for name, r in rows:
        print(f"| {name} | {'yes' if r['mkl_fix'] else 'no'} | "
              f"{' | '.join(format(r[k + '_ms'], '.1f') for k in labels)} | {r['torch_ms']:.1f} | "
              f"{' | '.join(format(r[k + '_ms'] / r['torch_ms'], '.2f') + 'x' for k in labels)} | "
              f"{', '.join(format(r[k + '_err'], '.1e') for k in labels)} |")
    print(f"(medians of {args.repeats} interleaved forwards, batch 1, float32)")


if __name__ == "__main__":
    main()
