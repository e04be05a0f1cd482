"""train.py under torchrun, on CPU (gloo): 2 processes at --batch-size B take the same steps as one
process at B that cuts each batch into the same 2 micro-batches (--grad-accum 2). Each torchrun
launch starts two Pythons (about 15 s on a 2-core machine). Run as a script (by torchrun below),
this file is train.py recording the gradients of each step (record_grads)."""
import itertools
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import runtime
import train
from test_train import SMALL

HERE = os.path.dirname(os.path.abspath(__file__))
# Float tolerance of the comparison: the two runs add the same slice gradients in another order
# (all-reduce vs autograd accumulation); on this CPU they came out bit-equal, the tolerance leaves room
# for other machines. Measured failures it catches: without the all-reduce each process steps on its
# own half of the batch (adapters off by 5e-3); stage 3's cache gathered in the wrong order (8e-4).
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """test_train's small run on the tiny backbone saved as a model directory: the same weights and
    tokenizer, but a process loads it in about 1 s instead of re-reading the GGUF tokenizer (8 s)."""
    from clara import load_backbone
    path = tmp_path_factory.mktemp("tiny")
    for part in load_backbone("tiny"):  # (model, tokenizer)
        part.save_pretrained(path)
    return SMALL + ["--backbone", str(path)]  # the last --backbone wins


def torchrun(args, nproc=2, grads=None):
    """train.py under torchrun; with grads=DIR, this file instead, so each step's gradients land in DIR."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: threads only fight over the cores
    script = ["train.py"] if grads is None else [os.path.basename(__file__), str(grads)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(HERE, script[0]), *script[1:], *args]
    return subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=300)


def record_grads(directory, set_attr=setattr):
    """Make train.py save the gradients each step takes (rank 0's, after backward and the all-reduce,
    before clipping and AdamW, both of which would hide their scale) as DIR/grads-<step>.pt: a
    micro-batch's loss weighed 1 instead of 1 / (P A) shows here, not in the adapters after AdamW."""
    os.makedirs(directory, exist_ok=True)
    real, steps = train.all_reduce_grads, itertools.count()

    def spy(params):
        real(params)
        step = next(steps)
        if runtime.is_main():
            torch.save([p.grad for p in params], os.path.join(directory, f"grads-{step:02d}.pt"))
    set_attr(train, "all_reduce_grads", spy)


def assert_same_grads(a_dir, b_dir):
    names = sorted(os.listdir(a_dir))
    assert names == sorted(os.listdir(b_dir)) and names, (names, sorted(os.listdir(b_dir)))
    for name in names:
        a, b = (torch.load(os.path.join(d, name), weights_only=True) for d in (a_dir, b_dir))
        assert [g is None for g in a] == [g is None for g in b], name
        for i, (x, y) in enumerate(zip(a, b)):
            if x is not None:
                torch.testing.assert_close(x, y, atol=ATOL * x.abs().max().item(), rtol=RTOL,
                                           msg=lambda m: f"{name}, parameter {i}: {m}")


def assert_same_adapters(a_dir, b_dir):
    a, b = load_file(a_dir / "adapters.safetensors"), load_file(b_dir / "adapters.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def test_two_processes_train_what_one_process_with_two_micro_batches_trains(tmp_path, small, monkeypatch):
    args = small + ["--steps", "2", "2", "2"]
    run = torchrun(args + ["--out", str(tmp_path / "ddp")], grads=tmp_path / "ddp_grads")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torchrun: 2 processes, backend gloo" in run.stdout
    record_grads(tmp_path / "one_grads", monkeypatch.setattr)
    train.main(args + ["--out", str(tmp_path / "one"), "--grad-accum", "2"])
    assert_same_grads(tmp_path / "ddp_grads", tmp_path / "one_grads")  # 6 steps: 2 per stage
    assert_same_adapters(tmp_path / "ddp" / "e2e", tmp_path / "one" / "e2e")
    recs = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    assert [r["stage"] for r in recs] == ["pretrain"] * 2 + ["instruct"] * 2 + ["e2e"] * 2, \
        "rank 0 alone logs: one line per step, not one per process"


def test_resume_under_torchrun_continues_a_checkpoint_of_one_process(tmp_path, small):
    """Stopped as one process with --grad-accum 2 (torchrun's launch is the slow part of this file),
    resumed as 2 processes: the same 2 slices per step, so the same run as an uninterrupted one."""
    pretrain = small + ["--stage", "pretrain", "--steps", "4", "0", "0"]
    one = pretrain + ["--grad-accum", "2"]
    with pytest.raises(SystemExit, match="stopped after step 2"):
        train.main(one + ["--out", str(tmp_path / "resumed"), "--stop-after", "2"])
    resumed = torchrun(pretrain + ["--out", str(tmp_path / "resumed"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout
    train.main(one + ["--out", str(tmp_path / "straight")])
    assert_same_adapters(tmp_path / "resumed" / "pretrain", tmp_path / "straight" / "pretrain")


def test_a_batch_that_does_not_split_into_equal_micro_batches_is_refused(tmp_path):
    message = "--batch-size 3 of stage pretrain does not split into 1 process(es) x --grad-accum 2"
    with pytest.raises(SystemExit, match=re.escape(message)):
        train.main(SMALL + ["--batch-size", "3", "2", "2", "--grad-accum", "2", "--out", str(tmp_path)])


if __name__ == "__main__":  # torchrun(..., grads=DIR): train.py, recording each step's gradients in DIR
    record_grads(sys.argv[1])
    train.main(sys.argv[2:])
