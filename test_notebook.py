"""notebooks/walkthrough.ipynb is code: it runs top to bottom and its asserts hold (it is kept
without outputs, so only executing it checks it)."""
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the dev extras: pip install -r requirements-dev.txt")
nbclient = pytest.importorskip("nbclient", reason="needs the dev extras: pip install -r requirements-dev.txt")

NOTEBOOKS = Path(__file__).parent / "notebooks"


def kernel_name(tmp_path, monkeypatch) -> str:
    """'python3' when it starts this interpreter, which a plain `pip install ipykernel` provides (its
    argv[0] is "python", which jupyter_client replaces by sys.executable). A python3 kernelspec
    registered elsewhere (say ~/.local) may start another interpreter without torch: then write one
    for sys.executable and put it first on JUPYTER_PATH."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    pytest.importorskip("ipykernel", reason="needs the dev extras: pip install -r requirements-dev.txt")
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    if argv0 in ("python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]) \
            or (argv0 and os.path.realpath(argv0) == os.path.realpath(sys.executable)):
        return "python3"
    from ipykernel.kernelspec import install
    install(kernel_name="python3", prefix=str(tmp_path))  # argv[0] = sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    return "python3"


def test_walkthrough_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / "walkthrough.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells), "commit the notebook without outputs"
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name(tmp_path, monkeypatch), timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})  # cwd
    # the kernel inherits this process's environment (conftest.py: offline); one thread, as in the
    # tests, because thread start-up dominates on a tiny model
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    client.execute(env=env)  # raises CellExecutionError naming the cell and its traceback
