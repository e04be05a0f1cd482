"""README.md's snippets are code: every ```python block runs, and CI's test command is in it."""
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

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
