"""How steady is the MFU denominator, and what does bf16 buy on this CPU? Calls
runtime.measure_peak_flops (the best n x n matmul in the training dtype) several times in one
process, with 5 repetitions and with 25, and prints GFLOP/s. On a shared CPU the rate can switch
between levels for seconds at a time, and then MFU is comparable across runs only with a fixed
--peak-flops. With --dtype, compare float32 and bf16 autocast: on a CPU without native bf16 (no
avx512_bf16 or amx_bf16) a bf16 matmul is emulated and far slower, which is why train.py's
--dtype auto keeps float32 there (use a small --n: a 2048 matmul then takes seconds). Run alone:

    python experiments/peak_flops.py
    python experiments/peak_flops.py --dtype float32 --n 512
    python experiments/peak_flops.py --dtype bfloat16 --n 512
"""
import argparse
import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from runtime import measure_peak_flops, pick_device  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
               help="as in train.py")
p.add_argument("--n", type=int, default=2048, help="matrix size (train.py measures 2048)")
args = p.parse_args()
with contextlib.redirect_stdout(io.StringIO()) as said:
    device, autocast, _ = pick_device(args.dtype)
print(said.getvalue().strip())
for reps in (5, 25):
    rates = [measure_peak_flops(device, autocast, n=args.n, reps=reps) / 1e9 for _ in range(4)]
    print(f"n {args.n}, reps {reps:2d}: " + ", ".join(f"{r:.1f}" for r in rates) + " GFLOP/s")
