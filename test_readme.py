"""README.md's snippets are code: every ```python block runs, and CI's test command is in it; the
file map and the experiment scripts the results name match the tree; the layout the file map draws
(no private name used across modules, no script imported by a module, no import cycle);
experiments/seeds.py's table."""
import ast
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
README = (ROOT / "README.md").read_text()


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python snippet"
    for block in blocks:
        out = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, f"README snippet failed:\n{block}\n{out.stderr[-2000:]}"


def test_readme_names_the_ci_test_command():
    match = re.search(r"<!-- test-command -->\n```bash\n(.+)\n", README)
    assert match and "pytest" in match.group(1), "README must show the test command CI runs"


def test_readme_file_map_and_the_repository_agree():
    section = README.split("\n## Files\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `([^`]+)`", section, flags=re.M)
    assert named, "README.md has no file map (a '## Files' table)"
    for pattern in named:
        assert list(ROOT.glob(pattern.rstrip("/"))), f"the file map names {pattern}, which does not exist"
    for module in sorted(p.name for p in ROOT.glob("*.py")):
        assert any(fnmatch.fnmatch(module, p) for p in named), f"{module} is missing from the file map"


def test_every_experiment_script_the_results_name_exists():
    """README.md and docs/results.md give a command for each figure; each script they name is here."""
    named = set()
    for page in ("README.md", "docs/results.md", "docs/design.md"):
        named |= set(re.findall(r"experiments/[\w./-]+\.(?:sh|py)", (ROOT / page).read_text()))
    assert "experiments/budget.sh" in named, "README/docs name no experiment script: the pattern broke"
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, f"README.md / docs/results.md / docs/design.md name scripts that do not exist: {missing}"


SCRIPTS = ("train", "eval", "ask")  # run, not imported: only tests and experiments may import them


def _imports():
    """Every project file (top level and experiments/) -> ({project module it imports: line},
    [(line, "module._name") for each private name it takes from another module])."""
    files = sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("experiments/*.py"))
    modules = {p.stem for p in files}
    out = {}
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        alias, imported, private = {}, {}, []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules:
                        alias[a.asname or a.name] = a.name
                        imported.setdefault(a.name, node.lineno)
            elif isinstance(node, ast.ImportFrom) and node.module in modules and not node.level:
                imported.setdefault(node.module, node.lineno)
                private += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if a.name.startswith("_")]
        for node in ast.walk(tree):  # module._name, where module names an imported project module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in alias \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                private.append((node.lineno, f"{alias[node.value.id]}.{node.attr}"))
        out[path.relative_to(ROOT).as_posix()] = imported, private
    assert {"clara", "data", "runtime"} <= set(out["train.py"][0]), "the import scan broke: train.py imports nothing"
    return out


def test_no_module_uses_another_modules_private_names():
    found = [f"{f}:{line} uses {name}" for f, (_, private) in _imports().items() for line, name in private]
    assert not found, "a _name is private to its module; make it public or move it: " + "; ".join(found)


def test_only_tests_and_experiments_import_the_scripts():
    """train.py, eval.py and ask.py are run, never imported by the modules they use or by each other
    (eval.py must not import train.py)."""
    found = [f"{f}:{line} imports {m}" for f, (imported, _) in _imports().items() for m, line in imported.items()
             if m in SCRIPTS and "/" not in f and not f.startswith("test_")]
    assert not found, "; ".join(found)


def test_the_modules_import_each_other_without_a_cycle():
    graph = {f.removesuffix(".py"): set(imported) for f, (imported, _) in _imports().items() if "/" not in f}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        if m not in done:
            path.append(m)
            for n in sorted(graph.get(m, ())):
                visit(n)
            path.pop()
            done.add(m)
    for m in sorted(graph):
        visit(m)

def _seeds():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import seeds
    finally:
        sys.path.pop(0)
    return seeds


def _results(compressed, shuffled, diff, lo, hi, mrr_diff, e2e=True):
    """A results.json as eval.py writes it, with the keys experiments/seeds.py reads (fractions)."""
    settings = {"text-rag": {"em": 0.2}, "compressed": {"em": compressed}, "compressed-shuffled": {"em": shuffled}}
    if e2e:
        settings["end-to-end"] = {"em": 0.07}
    interval = lambda d, a, b: {"diff": d, "lo": a, "hi": b}
    return {"settings": settings,
            "reranking": {"before": {"mrr": 0.47}, "after": {"mrr": 0.47 + mrr_diff}},
            "intervals": {"compressed - shuffled": {"em": interval(diff, lo, hi)},
                          "MRR: after - before stage 3": {"mrr": interval(mrr_diff, mrr_diff - 0.04, mrr_diff + 0.04)}}}


def test_seeds_table_means_spread_and_verdicts():
    """Two seeds: per-seed values beside their intervals, the mean and min..max, and a claim that
    holds only when every seed keeps its sign; absent settings print '-', not a crash."""
    seeds = _seeds()
    runs = {0: _results(0.11, 0.05, 0.06, 0.025, 0.10, -0.038),
            1: _results(0.13, 0.10, 0.015, -0.015, 0.05, -0.021, e2e=False)}
    rows = {line.split(" | ")[0].strip("| *"): line for line in seeds.table(runs).splitlines()}
    assert "| 11.0 | 13.0 | 12.0 | 11.0..13.0 |" in rows["compressed EM"]
    assert "| 7.0 | - | 7.0 | 7.0..7.0 |" in rows["end-to-end EM"]
    claim = rows["compressed - shuffled (EM)"]
    assert "+6.0 [+2.5, +10.0] | +1.5 [-1.5, +5.0] | +3.8 | +1.5..+6.0 | holds (1 of 2 seeds beyond" in claim
    assert "reversed" in rows["MRR: after - before stage 3"]
    assert "not measured" in rows["end-to-end - shuffled (EM)"]
    assert seeds.verdict([0.5, 0.0]).startswith("does not hold"), "a seed at zero must break the claim"
    assert seeds.verdict([4.0, -0.5]).startswith("does not hold")


def test_seeds_skips_seeds_already_evaluated(tmp_path, monkeypatch, capsys):
    """seeds.py trains nothing for a seed whose results.json exists, and tabulates it."""
    seeds = _seeds()
    for s in (0, 1):
        (tmp_path / f"x_seed{s}").mkdir()
        (tmp_path / f"x_seed{s}" / "results.json").write_text(json.dumps(_results(0.1, 0.05, 0.05, 0.01, 0.09, 0.02)))
    monkeypatch.setattr(seeds.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    seeds.main(["--seeds", "0", "1", "--runs", str(tmp_path), "--name", "x"])
    out = capsys.readouterr().out
    assert "seed 0 not re-run" in out and "seed 1 not re-run" in out
    assert "| **compressed - shuffled (EM)** | +5.0 [+1.0, +9.0] | +5.0 [+1.0, +9.0] | +5.0 | +5.0..+5.0 | holds" in out


def test_seeds_passes_train_and_eval_flags_through(tmp_path, monkeypatch):
    """--train-args and --eval-args reach train.py and eval.py (experiments/meanpool.sh relies on
    it); explicit --steps replace --budget, which train.py refuses beside them."""
    seeds, calls = _seeds(), []

    def fake_run(cmd, **kw):  # eval.py "writes" a results.json
        calls.append(cmd[1:])
        if cmd[1] == "eval.py":
            Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(_results(0.1, 0.05, 0.05, 0.01, 0.09, 0.02)))
    monkeypatch.setattr(seeds.subprocess, "run", fake_run)
    (tmp_path / "a_seed0").mkdir()
    seeds.main(["--seeds", "0", "--runs", str(tmp_path), "--name", "a", "--budget", "60",
                "--train-args=--compressor mean-pool", "--eval-args=--limit 4"])
    assert calls[0][:3] == ["train.py", "--budget", "60"] and calls[0][-2:] == ["--compressor", "mean-pool"]
    assert "--resume" in calls[0], "an interrupted seed must continue, not start again"
    assert calls[1] == ["experiments/text_reference.sh", str(tmp_path / "a_seed0")]  # its recipe from args.json
    assert calls[2][0] == "eval.py" and calls[2][-2:] == ["--limit", "4"]
    (tmp_path / "b_seed0").mkdir()
    seeds.main(["--seeds", "0", "--runs", str(tmp_path), "--name", "b", "--train-args=--steps 2 2 2"])
    assert "--budget" not in calls[3] and calls[3][-4:] == ["--steps", "2", "2", "2"]


def test_seeds_compression_only_trains_two_stages_and_scores_the_compressed_setting(tmp_path, monkeypatch, capsys):
    """--compression-only: stage 1, then stage 2 from its checkpoint, no text reference, eval.py of the
    stage-2 checkpoint on the compressed setting into results_instruct.json; --versus pairs those
    files and leaves out the end-to-end row they do not have."""
    seeds, calls = _seeds(), []

    def fake_run(cmd, **kw):  # eval.py "writes" compressed answers for 4 questions
        calls.append(cmd[1:])
        if cmd[1] == "eval.py":
            em = [1.0, 1.0, 0.0, 1.0] if "a_seed1" in cmd[cmd.index("--out") + 1] else [0.0, 1.0, 0.0, 0.0]
            res = _results(0.75, 0.25, 0.5, 0.1, 0.9, 0.0, e2e=False)
            res["predictions"] = [{"question": f"q{i}", "compressed": {"em": e}} for i, e in enumerate(em)]
            Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(res))
    monkeypatch.setattr(seeds.subprocess, "run", fake_run)
    for name in ("a", "b"):
        (tmp_path / f"{name}_seed1").mkdir()
        seeds.main(["--seeds", "1", "--runs", str(tmp_path), "--name", name, "--budget", "60",
                    "--compression-only"] + (["--versus", "a"] if name == "b" else []))
    run = str(tmp_path / "a_seed1")
    assert calls[0][-2:] == ["--stage", "pretrain"] and calls[0][:3] == ["train.py", "--budget", "60"]
    assert calls[1][-4:] == ["--stage", "instruct", "--init", str(Path(run) / "pretrain")]
    assert calls[2][:7] == ["eval.py", "--ckpt", str(Path(run) / "instruct"), "--settings", "compressed",
                            "--out", str(Path(run) / "results_instruct.json")]
    assert len(calls) == 6 and not any("text_reference" in " ".join(c) for c in calls)
    paired = capsys.readouterr().out.split("| b - a | seed 1 |")[1]
    assert "| compressed EM | -50.0 [" in paired, paired  # b - a on the same 4 questions: 1/4 - 3/4
    assert "end-to-end" not in paired


def test_seeds_text_reference_adds_the_text_run_and_scores_text_rag_after_stage_2(tmp_path, monkeypatch):
    """--compression-only --text-reference: stages 1-2, the text reference from the same run, then one
    eval.py of the stage-2 checkpoint on compressed and text-rag into its own file, so the plain
    compression-only results are neither overwritten nor mistaken for it; alone, the flag is refused."""
    seeds, calls = _seeds(), []

    def fake_run(cmd, **kw):
        calls.append(cmd[1:])
        if cmd[1] == "eval.py":
            Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(_results(0.1, 0.05, 0.05, 0.01, 0.09, 0.02)))
    monkeypatch.setattr(seeds.subprocess, "run", fake_run)
    run = tmp_path / "a_seed0"
    run.mkdir()
    (run / "results_instruct.json").write_text("{}")  # an earlier compression-only eval
    seeds.main(["--seeds", "0", "--runs", str(tmp_path), "--name", "a", "--budget", "60",
                "--compression-only", "--text-reference"])
    assert [c[-2:] for c in calls[:2]] == [["--stage", "pretrain"], ["--init", str(run / "pretrain")]]
    assert calls[2] == ["experiments/text_reference.sh", str(run)]
    assert calls[3] == ["eval.py", "--ckpt", str(run / "instruct"), "--settings", "compressed", "text-rag",
                        "--out", str(run / "results_instruct_text.json")]
    assert len(calls) == 4 and (run / "results_instruct.json").read_text() == "{}"
    with pytest.raises(SystemExit):
        seeds.main(["--seeds", "0", "--runs", str(tmp_path), "--name", "a", "--text-reference"])


def test_seeds_plot_draws_each_seeds_logged_curves(tmp_path):
    """--plot: one line per seed in each stage's panel, its points those the run's metrics.jsonl logged."""
    pytest.importorskip("matplotlib")  # optional for clara: plotting only
    seeds = _seeds()
    runs = {}
    for s in (0, 1):
        out = tmp_path / f"x_seed{s}"
        out.mkdir()
        recs = [{"stage": "pretrain", "step": t, "gap": 0.1 * t + s} for t in (10, 20)]
        recs += [{"stage": "instruct", "step": 10, "gap": -0.01 * s, "loss": 1.0}]
        recs += [{"stage": "e2e", "step": t, "eval_mrr": 0.5 - 0.01 * t, "mrr": 0.9} for t in (10, 20, 30)]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        runs[s] = str(out)
    fig = seeds.plot(runs, str(tmp_path / "seeds.png"))
    assert (tmp_path / "seeds.png").stat().st_size > 0
    stage1, stage2, stage3 = ([(list(l.get_xdata()), list(l.get_ydata())) for l in ax.lines if l.get_label().startswith("seed")]
                              for ax in fig.axes)
    assert stage1[1] == ([10, 20], [2.0, 3.0])
    assert stage2[1] == ([10], [-0.01])
    assert stage3[0] == ([10, 20, 30], [0.4, 0.3, 0.2])


def test_seeds_versus_pairs_two_recipes_question_by_question(tmp_path, capsys):
    """--versus: recipe minus recipe per seed, paired on the same questions, and a clear refusal
    when the two runs of a seed hold different questions."""
    seeds = _seeds()

    def run(name, seed, em, questions="abcd"):
        preds = [{"question": q, "compressed": {"em": e}, "end-to-end": {"em": 0.0}} for q, e in zip(questions, em)]
        (tmp_path / f"{name}_seed{seed}").mkdir()
        res = {**_results(0.1, 0.05, 0.05, 0.01, 0.09, 0.02), "predictions": preds, "data": f"{name}.jsonl"}
        (tmp_path / f"{name}_seed{seed}" / "results.json").write_text(json.dumps(res))

    run("new", 0, [1] * 8, "abcdefgh"), run("old", 0, [0] * 8, "abcdefgh")  # +100 points, beyond its interval
    run("new", 1, [1, 0, 0, 0]), run("old", 1, [0, 0, 0, 0])  # +25 points, interval [+0, +75]: not beyond
    seeds.main(["--seeds", "0", "1", "--runs", str(tmp_path), "--name", "new", "--table-only", "--versus", "old"])
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()}
    assert rows["compressed EM"].startswith("| compressed EM | +100.0 [+100.0, +100.0] | +25.0 [")
    assert rows["compressed EM"].endswith("| +62.5 | holds (1 of 2 seeds beyond their interval) |")
    assert "| +0.0 | does not hold" in rows["end-to-end EM"]
    run("new", 2, [1, 0, 0, 0]), run("old", 2, [0, 0, 0, 0], questions="abcx")
    with pytest.raises(SystemExit, match="seed 2's two results.json hold different questions"):
        seeds.main(["--seeds", "2", "--runs", str(tmp_path), "--name", "new", "--table-only", "--versus", "old"])


def test_real_text_meanpool_table_pairs_the_two_compressors_per_seed(tmp_path, monkeypatch, capsys):
    """ablation_table.py meanpool: each recipe's row from its own run, mean pooling - memory tokens
    paired on the same questions per seed (a seed with one run is shown, not paired), and a clear
    refusal when the questions differ."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import ablation_table
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(tmp_path)

    def run(name, compressed, questions="abcd", gap=0.25):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        preds = [{"question": q, "compressed": {"f1": f}} for q, f in zip(questions, compressed)]
        interval = {"f1": {"diff": 0.1, "lo": 0.05, "hi": 0.15}}
        settings = {"closed-book": {"f1": 0.2}, "compressed": {"f1": sum(compressed) / len(compressed)},
                    "compressed-shuffled": {"f1": 0.1}}
        (d / "results.json").write_text(json.dumps({"settings": settings, "predictions": preds,
                                                    "intervals": {"compressed - shuffled": interval}}))
        (d / "metrics.jsonl").write_text(json.dumps({"stage": "pretrain", "step": 150, "gap": gap}) + "\n"
                                         + json.dumps({"stage": "instruct", "step": 30, "gap": 9.0}) + "\n")

    run("real_seed0", [0, 0.5, 0, 0]), run("real_meanpool_seed0", [1, 0.5, 1, 0], gap=0.5)  # +50 F1
    run("real_seed1", [0, 0, 0, 0]), run("real_meanpool_seed1", [1, 0, 0, 0])  # +25 F1
    ablation_table.main("meanpool", "0", "1")
    out = capsys.readouterr().out
    assert "| mean pooling | 0 | +0.500 | 20.0 / 62.5 / 10.0 | +10.0 [+5.0, +15.0] |" in out
    assert "| memory tokens | 1 | +0.250 | 20.0 / 0.0 / 10.0 |" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("| paired over the same questions | +50.0 [") and last.endswith("| +37.5 |")
    run("real_seed2", [0, 0, 0, 0]), run("real_meanpool_seed2", [1, 0, 0, 0], questions="abcx")
    with pytest.raises(SystemExit, match="seed 2: .* hold different questions"):
        ablation_table.main("meanpool", "2")
    run("real_meanpool_seed3", [1, 0, 0, 0])  # a seed whose memory-token run is missing: shown, not paired
    ablation_table.main("meanpool", "0", "3")
    out = capsys.readouterr().out
    assert "| memory tokens | 3 | not run (" in out and "| mean pooling | 3 | +0.250 | 20.0 / 25.0 / 10.0 |" in out
    last = out.strip().splitlines()[-1]
    assert "| seed 0 |" in out and "seed 3" not in last and last.endswith("| +50.0 |")
    ablation_table.main("meanpool", "3")  # no seed with both runs: said, not an empty table
    assert capsys.readouterr().out.strip().endswith("mean pooling - memory tokens: no seed has both runs")
    monkeypatch.setenv("NAME", "real_x2")  # real_text.sh's longer rung: its own runs, its own table
    run("real_x2_seed0", [0, 0, 0, 0]), run("real_x2_meanpool_seed0", [1, 0, 0, 0])  # +25 F1 (real_seed0: +50)
    ablation_table.main("meanpool", "0", "1")
    out = capsys.readouterr().out
    assert "| mean pooling | 1 | not run (runs/real_x2_meanpool_seed1: `" in out
    assert out.strip().splitlines()[-1].startswith("| paired over the same questions | +25.0 [")
