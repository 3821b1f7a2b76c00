"""The byte-array form weights travel in through Ray's object store (no Ray started here)."""

import numpy as np
import torch

from slowthink.distributed.rollout_pool import pack, unpack


def test_pack_round_trip_keeps_values_dtypes_and_shapes():
    tensors = {"w": torch.randn(3, 4), "half": torch.randn(5).to(torch.bfloat16), "scalar": torch.tensor(2.5),
               "strided": torch.randn(4, 6).t(), "ints": torch.arange(7), "empty": torch.zeros(0, 3)}
    back = unpack(pack(tensors))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v), k


def test_packed_values_are_numpy_byte_arrays():
    # numpy arrays are what Ray reads back from its object store without a copy
    arrays = [a for a, _, _ in pack({"w": torch.randn(2, 2), "h": torch.ones(3, dtype=torch.bfloat16)}).values()]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.uint8 for a in arrays)
    assert [a.size for a in arrays] == [16, 6]

