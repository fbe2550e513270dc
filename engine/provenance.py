"""Where a run came from: its command line, the code's commit, the library versions and the machine. A run
keeps them in args.json ("provenance"), so that a figure read from a run folder can name what produced it."""
import datetime
import os
import platform
import shlex
import subprocess
import sys

import numpy as np
import sklearn
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository this code runs from


def _git(folder, *args):
    """git's output in `folder`, or None (no git, not a checkout, an error)."""
    try:
        out = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(folder=ROOT):
    """(commit, dirty) of the code in `folder`: dirty when tracked files differ from the commit. (None, None)
    when `folder` is not the top of a git checkout (a `git archive` copy, or a copy inside another repository)."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != os.path.realpath(folder):
        return None, None
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return _git(folder, "rev-parse", "HEAD"), None if status is None else bool(status)


def short_commit(commit, dirty):
    """'abc1234', 'abc1234+dirty' when tracked files differed from it, '' when unknown (not a checkout)."""
    return f"{commit[:7]}{'+dirty' if dirty else ''}" if commit else ""


def cpu_name():
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device, command=None, processes=1):
    """The record for args.json: the main.py command line (`command`: its arguments as a list), or without one
    (the API, a tool) the process's; the number of torchrun processes; the commit and whether tracked files
    differed from it; versions, CPU, device (and GPU name), and the start time."""
    commit, dirty = git_commit()
    device = torch.device(device)
    origin = dict(command=shlex.join(["python", "main.py", *command])) if command is not None else \
        dict(process=shlex.join(["python", *sys.argv]))
    return dict(**origin, processes=processes, commit=commit, dirty=dirty, python=platform.python_version(),
                torch=torch.__version__, numpy=np.__version__, sklearn=sklearn.__version__, cpu=cpu_name(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(), device=str(device),
                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
