"""CPU speed switch: Paddle's bundled MKL takes a slow code path on AMD CPUs unless told otherwise.

`MKL_DEBUG_CPU_TYPE=5` must be in the environment before paddle is imported (a 2.7x faster matmul on the AMD EPYC
machines this project is developed on; `bench/bench_transformer.py --no-mkl-fix` measures the difference).
"""

import os


def is_amd_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return "AuthenticAMD" in f.read(4096)
    except OSError:
        return False


def enable_fast_mkl():
    """Set MKL_DEBUG_CPU_TYPE=5 on AMD CPUs unless the user already chose a value. Returns whether it is set."""
    if "MKL_DEBUG_CPU_TYPE" not in os.environ and is_amd_cpu() and os.environ.get("PPFLUX_NO_MKL_FIX") != "1":
        os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return os.environ.get("MKL_DEBUG_CPU_TYPE") == "5"
