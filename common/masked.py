"""The mean over the real entries of a tensor: what the losses, the codebook and the pooling share."""


def masked_mean(x, keep=None, dim=None, keepdim=False):
    """Mean of x over `dim` (None: every dimension) counting only the entries where the bool `keep`
    (broadcastable to x) is True; None keeps all. Padding windows and filler slots leave it unchanged, and a
    slice with nothing kept gives 0, not NaN."""
    if keep is None:
        return x.mean() if dim is None else x.mean(dim, keepdim=keepdim)
    w = keep.to(x.dtype).expand_as(x)   # counts entries of x, also where keep broadcasts along a reduced dimension
    if dim is None:
        return (x * w).sum() / w.sum().clamp_min(1)
    return (x * w).sum(dim, keepdim=keepdim) / w.sum(dim, keepdim=keepdim).clamp_min(1)
