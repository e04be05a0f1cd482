"""How steady is the MFU denominator? Calls train.measure_peak_flops (the best 2048 x 2048 matmul
in the training dtype) several times in one process, with its default 5 repetitions and with 25,
and prints GFLOP/s. On a shared CPU the rate can switch between levels for seconds at a time, and
then MFU is comparable across runs only with a fixed --peak-flops. Run alone:

    python experiments/peak_flops.py
"""
import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from train import measure_peak_flops, pick_device  # noqa: E402

with contextlib.redirect_stdout(io.StringIO()):
    device, autocast = pick_device("auto")
for reps in (5, 25):
    print(f"reps {reps:2d}: " + ", ".join(f"{measure_peak_flops(device, autocast, reps=reps) / 1e9:.0f}"
                                          for _ in range(4)) + " GFLOP/s")
