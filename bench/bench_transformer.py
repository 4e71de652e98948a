"""Forward latency of the Paddle FLUX transformer vs diffusers' (PyTorch) on identical weights, on the CPU.

    python bench/bench_transformer.py [--repeats 7] [--threads 2] [--configs tiny medium]

Each configuration is timed in a child process per MKL setting (MKL_DEBUG_CPU_TYPE must be set before paddle is
imported), Paddle and PyTorch runs interleaved in the same process; medians and ratios are printed as a markdown table.
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


def measure(name, repeats, threads):
    """Runs in the child: build both models with the same weights and time them alternately."""
    import numpy as np
    import paddle
    import torch

    import ppflux_lightning  # noqa: F401  (MKL switch before paddle)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from torch_reference import image_ids, random_diffusers_transformer

    from ppflux_lightning.models import FluxTransformer2DModel

    torch.set_num_threads(threads)
    spec = CONFIGS[name]
    ref = random_diffusers_transformer(spec["model"], seed=0, std=0.02)
    folder = f"/tmp/bench_transformer_{name}_{os.getpid()}"
    ref.save_pretrained(folder)
    ours = FluxTransformer2DModel.from_pretrained(folder)
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
    pd_in = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    th_in = {k: torch.tensor(v) for k, v in arrays.items()}

    def run_paddle():
        with paddle.no_grad():
            return ours(**pd_in).numpy()

    def run_torch():
        with torch.no_grad():
            return ref(**th_in).sample.numpy()

    diff = float(np.abs(run_paddle() - run_torch()).max() / np.abs(run_torch()).max())
    times = {"paddle": [], "torch": []}
    for _ in range(repeats):
        for label, fn in (("paddle", run_paddle), ("torch", run_torch)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {
        "paddle_ms": 1000 * statistics.median(times["paddle"]),
        "torch_ms": 1000 * statistics.median(times["torch"]),
        "rel_err": diff,
        "mkl_fix": os.environ.get("MKL_DEBUG_CPU_TYPE") == "5",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.threads)))
        return
    rows = []
    for name in args.configs:
        for mkl_fix in (True, False):
            # Passive OpenMP waiting: otherwise Paddle's idle spinning threads steal the cores from PyTorch's turn.
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                   "KMP_BLOCKTIME": "0", "OMP_WAIT_POLICY": "PASSIVE"}
            env.pop("MKL_DEBUG_CPU_TYPE", None)
            env["PPFLUX_NO_MKL_FIX"] = "0" if mkl_fix else "1"
            out = subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(args.repeats),
                                  "--threads", str(args.threads)], env=env, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((name, result))
    print(f"| config | MKL_DEBUG_CPU_TYPE=5 | paddle ms (median of {args.repeats}) | torch ms | paddle / torch "
          "| max rel err |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {'yes' if r['mkl_fix'] else 'no'} | {r['paddle_ms']:.1f} | {r['torch_ms']:.1f} | "
              f"{r['paddle_ms'] / r['torch_ms']:.2f}x | {r['rel_err']:.1e} |")


if __name__ == "__main__":
    main()
