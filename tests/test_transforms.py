"""The batch transforms' checks (minisnn/data/transforms.py); their effect is tested in test_data.py."""
import numpy as np
import pytest

from minisnn.data import crop_and_flip, random_crop, random_flip


@pytest.mark.parametrize("transform", [random_flip, lambda batch, rng: random_crop(batch, 4, rng), crop_and_flip])
def test_a_batch_that_is_not_n_c_h_w_is_refused_not_broadcast(transform):
    rng = np.random.default_rng(0)
    for bad, shape in ((np.zeros((2, 3, 4), np.uint8), r"\(2, 3, 4\)"), ([[[[0]]]], "list")):
        with pytest.raises(ValueError, match=rf"random_(flip|crop): expected a NumPy batch \[N, C, H, W\], got "
                                             rf"{shape}"):
            transform(bad, rng)
