"""Which rows of a batch each data-parallel rank takes (``minisnn/dist``); shared by every loader."""
import numpy as np


def shard_rows(n, rank, size):
    """The rows of a batch of n rows that rank ``rank`` of ``size`` takes: [n*rank//size, n*(rank+1)//size).

    Contiguous, in order, sizes differing by at most one; the ranks' rows together are all n rows."""
    if not (isinstance(size, (int, np.integer)) and size >= 1 and isinstance(rank, (int, np.integer))
            and 0 <= rank < size):
        raise ValueError(f"shard: need 0 <= rank < size, got rank {rank!r} of size {size!r}")
    return slice(n * rank // size, n * (rank + 1) // size)
