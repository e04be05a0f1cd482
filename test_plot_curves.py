"""plot_curves.py draws a stage's curves from train.py's metrics.jsonl and names the file and line
of anything it cannot plot."""
import json

import pytest

import plot_curves


def write_metrics(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


PRETRAIN = [{"stage": "pretrain", "step": s, "loss": 1.0 / s, "eval_own": 0.9, "eval_shuffled": 1.0,
             "gap": 0.1} for s in (10, 20)]
E2E = [{"stage": "e2e", "step": s, "loss": 1.0 / s, "hit": 0.5, "mrr": 0.3, "eval_loss": 1.1 / s,
        "eval_hit": 0.5, "eval_mrr": 0.2 + s / 100} for s in (10, 20, 30)]


@pytest.mark.parametrize("stage", ["e2e", "pretrain"])
def test_writes_a_png_for_a_stage(tmp_path, stage):
    pytest.importorskip("matplotlib", reason="plot_curves.py needs matplotlib (requirements-dev.txt)")
    metrics = write_metrics(tmp_path / "metrics.jsonl", PRETRAIN + E2E)
    out = tmp_path / "docs" / f"{stage}.png"  # a folder that does not exist yet
    assert plot_curves.main([metrics, "--stage", stage, "--out", str(out)]) == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert out.stat().st_size > 1000


def test_a_file_without_the_stage_is_a_clear_error(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", PRETRAIN)
    with pytest.raises(SystemExit, match=r"metrics\.jsonl: no rows for stage 'e2e' \(stages in the file: pretrain\)"):
        plot_curves.main([metrics, "--out", str(tmp_path / "e2e.png")])


def test_a_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(E2E[0]) + "\n" + '{"stage": "e2e", "step": 20, "loss": \n')
    with pytest.raises(SystemExit, match=r"metrics\.jsonl:2: not valid JSON"):
        plot_curves.main([str(path)])


def test_a_repeated_step_keeps_the_last_row(tmp_path):
    """A resumed run logs some steps again; its rows replace the interrupted run's."""
    rerun = dict(E2E[1], eval_mrr=0.9)
    rows = plot_curves.read_stage(write_metrics(tmp_path / "m.jsonl", E2E + [rerun]), "e2e")
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[1]["eval_mrr"] == 0.9
