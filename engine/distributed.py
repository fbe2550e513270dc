"""Devices, seeds and torch.distributed for `torchrun`: the process group from torchrun's environment, DDP
wrapping, sharded sampling and the few collectives the Trainer needs. With one process (no WORLD_SIZE > 1)
every helper is a plain pass-through, so the single-process path runs exactly as without this module.

Conventions: `--train_batch_size` is the GLOBAL batch (each of W processes takes batch / W rows), so a run's
hyperparameters mean the same for any number of processes; rank 0 alone reads checkpoints (then broadcasts
them, so nodes need no shared file system), fits the probe and writes files.
"""
import contextlib
import os
import random
import sys

import numpy as np
import torch
import torch.distributed as td
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from dataset import make_loader
from common.errors import TimeMAEError


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name):
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TimeMAEError(f"--device {name}: no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TimeMAEError(f"--device {name}: {name!r} is not a device name (cpu, cuda, cuda:N)") from None


def is_main_process():
    """Rank 0 (or the only process); readable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def launched_world_size():
    """Processes in this launch: torchrun's WORLD_SIZE, 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def exit_process(code):
    """End the process with this exit code. A torchrun worker, whose process group init_distributed has already
    left, exits at once: in the interpreter's teardown torch's gloo threads sometimes abort it (SIGABRT) after
    all its work is written, and torchrun then fails the whole launch (docs/distributed.md)."""
    if launched_world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def rank_seed(*keys):
    """A seed derived from (seed, rank, ...): streams of different ranks and of different --seed values never
    coincide (seed + rank would give run seed=0/rank 1 the draws of run seed=1/rank 0)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class _Method(nn.Module):
    """Exposes one method of a module as `forward`, the only entry point DDP synchronises gradients through."""

    def __init__(self, module, method):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


class Dist:
    """This process's place in the job (rank, world size, device) and the collectives the Trainer uses."""

    def __init__(self, device, rank=0, world_size=1):
        self.device, self.rank, self.world_size = device, rank, world_size

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    # ------------------------------------------------------------------------------------------ training
    def wrap(self, module, method):
        """A callable running `module.<method>`; with several processes a DDP module whose backward
        all-reduces (averages) the gradients, so every rank takes the same optimiser step. Every parameter
        that requires a gradient must be used by `method` (freeze the others), as DDP expects."""
        if not self.enabled:
            return getattr(module, method)
        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(_Method(module, method), device_ids=ids)

    def loader(self, dataset, batch_size, seed, num_workers):
        """Shuffled batches of the global size `batch_size`: with W processes each one reads a
        DistributedSampler shard in batches of batch_size / W."""
        sampler = (DistributedSampler(dataset, self.world_size, self.rank, shuffle=True, seed=seed)
                   if self.enabled else None)
        return make_loader(dataset, batch_size // self.world_size, seed=seed, num_workers=num_workers,
                           sampler=sampler)

    def set_epoch(self, loader, epoch):
        """Reshuffle the shards for `epoch` (the same permutation on every rank, a new one each epoch)."""
        if self.enabled:
            loader.sampler.set_epoch(epoch)

    # ------------------------------------------------------------------------------------------ collectives
    def all_reduce(self, tensor, op="sum"):
        """Reduce over ranks in place ('sum' or 'min') and return the tensor."""
        if self.enabled:
            td.all_reduce(tensor, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MIN)
        return tensor

    def broadcast(self, obj):
        """Rank 0's `obj` (any picklable object) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def on_main(self, fn, *args):
        """fn(*args) run by rank 0 alone (file access), its result broadcast; a TimeMAEError there is
        raised on every rank, so all processes stop with the same message instead of waiting."""
        if not self.enabled:
            return fn(*args)
        out = None
        if self.is_main:
            try:
                out = ("ok", fn(*args))
            except TimeMAEError as e:
                out = ("error", str(e))
        kind, value = self.broadcast(out)
        if kind == "error":
            raise TimeMAEError(value)
        return value

    def gather_rows(self, fn, x):
        """fn over the rows of x (N, ...) split across ranks, the per-row results (N, ...) as a numpy array
        on every rank. fn maps a tensor of rows to a numpy array with one row per input row. Shards are
        padded to equal size by repeating the last row, then trimmed."""
        if not self.enabled:
            return fn(x)
        size = -(-len(x) // self.world_size)
        idx = torch.arange(self.rank * size, (self.rank + 1) * size, device=x.device).clamp_max(len(x) - 1)
        local = torch.from_numpy(fn(x[idx])).to(self.device)                 # (size, ...)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        td.all_gather(parts, local)
        return torch.cat(parts)[: len(x)].cpu().numpy()                      # (N, ...)

    def check_replicas(self, module):
        """Raise if the module's parameters differ across ranks (they must be bitwise equal: DDP averages
        the gradients and the momentum encoder follows the synchronised visible encoder)."""
        if not self.enabled:
            return
        state = module.state_dict()
        mine = torch.stack([t.detach().double().abs().sum() + t.detach().double().sum() for t in state.values()])
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        td.all_gather(parts, mine)
        for r, theirs in enumerate(parts):
            diff = (theirs != parts[0]).nonzero().flatten().tolist()
            if diff:
                raise RuntimeError(f"model replicas diverged: rank {r} differs from rank 0 in "
                                   f"{list(state)[diff[0]]} (and {len(diff) - 1} more tensors)")


def attempt_store(rank, world):
    """init_process_group's store for this torchrun attempt: the agents' shared TCP store under a prefix of the
    restart count. A worker torchrun --max_restarts starts again must not read the killed attempt's keys there,
    where its process group setup can wait for peers that are gone (pytorch#135712: 3 of 6 restarts hung here).
    Empty (torch's own env:// store) outside torchrun or where torchrun does not share its store."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == "1":
        return {}
    shared = td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    return dict(store=td.PrefixStore(f"timemae/attempt{attempt}", shared), rank=rank, world_size=world)


@contextlib.contextmanager
def init_distributed(device_name):
    """Yield the Dist of this process. Under torchrun (WORLD_SIZE > 1) join the process group whose
    rendezvous torchrun set up in the environment: backend nccl with one GPU per process (cuda:LOCAL_RANK),
    gloo on CPUs; leave it on exit."""
    world = launched_world_size()
    device = resolve_device(device_name)
    if world == 1:
        yield Dist(device)
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None:
            raise TimeMAEError(f"under torchrun pass --device cuda, not {device_name}: process {rank} takes "
                               f"cuda:LOCAL_RANK")
        if local >= torch.cuda.device_count():
            raise TimeMAEError(f"process {rank} wants GPU {local} but this node has {torch.cuda.device_count()}; "
                               "start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise TimeMAEError(f"distributed training runs on cuda or cpu, not {device.type}")
    td.init_process_group(backend, **attempt_store(rank, world))
    try:
        yield Dist(device, rank, world)
    finally:
        td.destroy_process_group()
