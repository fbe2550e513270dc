"""The whole split as one tensor, served a batch at a time by index (no tensor built per item)."""
import torch
from torch.utils.data import DataLoader, Dataset


class SeriesDataset(Dataset):
    """x (N, T, C) float32 and optional labels y (N,) int64, kept as single tensors (on any device)."""

    def __init__(self, x, y=None, device="cpu"):
        self.x = torch.as_tensor(x, dtype=torch.float32).to(device)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.long).to(device)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i],) if self.y is None else (self.x[i], self.y[i])

    def __getitems__(self, idx):
        """A whole batch in one indexing op; DataLoader calls this with the sampler's batch of indices. The
        indices reach a GPU without a blocking copy, which would wait for every queued step to finish."""
        idx = torch.as_tensor(idx).to(self.x.device, non_blocking=True)
        return (self.x[idx],) if self.y is None else (self.x[idx], self.y[idx])


def _as_batch(batch):
    return batch


def make_loader(dataset, batch_size, seed=0, num_workers=0, sampler=None):
    """DataLoader over SeriesDataset whose batches are (x,) or (x, y) tensors; reshuffled every epoch (by
    `sampler` when given, else from a seeded generator) so a run is repeatable."""
    generator = torch.Generator().manual_seed(seed) if sampler is None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
                      num_workers=num_workers, collate_fn=_as_batch, pin_memory=False)
