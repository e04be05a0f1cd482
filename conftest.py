"""Tests never reach the Hugging Face hub: without this, a missing name retries for ~45 s."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# The tests use tiny models, where thread start-up dominates: one thread is as fast alone and far
# faster when other processes share the cores (measured ~30x on a busy 2-core machine).
torch.set_num_threads(1)
