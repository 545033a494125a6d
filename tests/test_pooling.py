import torch

from mtst.encoder import cls_pool, max_pool, mean_pool


def _batch():
    torch.manual_seed(0)
    states = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    return states, mask


def test_mean_pool_matches_per_row_loop():
    states, mask = _batch()
    expected = torch.stack([states[i, : int(mask[i].sum())].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(mean_pool(states, mask), expected)


def test_mean_pool_ignores_padding_values():
    states, mask = _batch()
    noisy = states.clone()
    noisy[mask == 0] = 1e6
    torch.testing.assert_close(mean_pool(noisy, mask), mean_pool(states, mask))


def test_max_pool_matches_per_row_loop():
    states, mask = _batch()
    states[1, 3] = 100.0  # a large value in the padding must not win
    expected = torch.stack([states[i, : int(mask[i].sum())].amax(dim=0) for i in range(3)])
    torch.testing.assert_close(max_pool(states, mask), expected)


def test_cls_pool_takes_first_token():
    states, mask = _batch()
    torch.testing.assert_close(cls_pool(states, mask), states[:, 0])


def test_mean_pool_of_empty_row_is_finite():
    assert torch.isfinite(mean_pool(torch.randn(1, 3, 4), torch.zeros(1, 3))).all()
