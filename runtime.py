"""The runtime around the method, shared by train.py, eval.py and ask.py: where and in which dtype
the model runs, several processes under torchrun, FLOP counting, and atomic file writes.
Nothing here is part of CLaRa itself; clara.py never imports it.
"""

import os


def atomic_write(path: str, write) -> None:
    """write(tmp_path), then rename: a reader never sees a half-written file."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)
