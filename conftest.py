"""Tests never reach the Hugging Face hub: without this, a missing name retries for ~45 s."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
