"""Shared head shapes and pooling; the learned metric folded into the exported vectors."""

import json

import pytest
import torch

from rsretrieve.model import HeadConfig, LearnedMetric, SemanticHead
from rsretrieve.model.head import token_grid


def test_head_pools_tokens_to_one_vector_per_tile():
    head = SemanticHead(HeadConfig(dim=32, depth=2, heads=4))
    for n in (1, 25, 64):
        assert head(torch.randn(3, n, 32), "sar").shape == (3, 32)


def test_head_is_invariant_to_token_order():
    # no position code inside the head: it only sees what the branches put into the tokens
    torch.manual_seed(0)
    head = SemanticHead(HeadConfig(dim=32)).eval()
    tokens = torch.randn(2, 16, 32)
    perm = torch.randperm(16)
    assert torch.allclose(head(tokens, "optical"), head(tokens[:, perm], "optical"), atol=1e-5)


def test_layout_read_out_sees_where_things_are_and_takes_any_grid():
    torch.manual_seed(0)
    head = SemanticHead(HeadConfig(dim=32, layout=4)).eval()
    tokens = torch.randn(2, 16, 32)
    perm = torch.randperm(16)
    assert not torch.allclose(head(tokens, "optical"), head(tokens[:, perm], "optical"), atol=1e-4)
    for n in (1, 4, 16, 64, 6):  # coarser, equal and finer square grids, and a row
        assert head(torch.randn(3, n, 32), "sar").shape == (3, 32)
    # the grid is resampled as an image: area means of 2 x 2 blocks, a constant grid stays constant
    grid = torch.arange(64.0).reshape(1, 8, 8, 1).expand(1, 8, 8, 3).reshape(1, 64, 3)
    out = token_grid(grid, 4)
    assert out.shape == (1, 16, 3) and out[0, 0, 0] == (0 + 1 + 8 + 9) / 4 and out[0, 5, 1] == (18 + 19 + 26 + 27) / 4
    assert torch.allclose(token_grid(torch.ones(2, 4, 5), 4), torch.ones(2, 16, 5))
    assert torch.equal(token_grid(tokens, 4), tokens)


def test_family_embedding_distinguishes_families():
    head = SemanticHead(HeadConfig(dim=32)).eval()
    tokens = torch.randn(2, 16, 32)
    assert not torch.allclose(head(tokens, "optical"), head(tokens, "sar"))
    flat = SemanticHead(HeadConfig(dim=32, family_embedding=False)).eval()
    assert torch.equal(flat(tokens, "optical"), flat(tokens, "sar"))


def test_head_config_is_plain_and_validated():
    assert json.loads(json.dumps(HeadConfig().to_dict()))["depth"] == 2
    with pytest.raises(ValueError, match="multiple of heads"):
        SemanticHead(HeadConfig(dim=30, heads=4))


def test_folded_inner_product_equals_learned_similarity():
    torch.manual_seed(0)
    metric = LearnedMetric(dim=16, embed_dim=128, temperature=0.05).double()
    h_a, h_b = torch.randn(5, 16, dtype=torch.float64), torch.randn(7, 16, dtype=torch.float64)
    s = metric.similarity(h_a, h_b)  # (5, 7) = cos(W h_a, W h_b) / tau
    folded = metric.export(h_a, fold_temperature=True) @ metric.export(h_b, fold_temperature=True).T
    assert torch.allclose(folded, s, rtol=0, atol=1e-6)
    # the exported (unit) vectors: inner product = similarity * tau, the same ranking
    unit = metric.export(h_a) @ metric.export(h_b).T
    assert torch.allclose(unit * metric.logit_scale, s, rtol=0, atol=1e-6)
    assert torch.allclose(metric.export(h_a).norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-12)
    assert torch.equal(unit.argsort(dim=1), s.argsort(dim=1))


def test_similarity_is_the_cosine_of_the_linear_map_by_hand():
    metric = LearnedMetric(dim=2, embed_dim=2, temperature=0.5)
    with torch.no_grad():
        metric.linear.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))  # W: scales the first axis by 2
    h_a, h_b = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # W h_a = (2, 1), W h_b = (2, 0): cos = 4 / (sqrt(5) * 2) = 2 / sqrt(5); / tau = 4 / sqrt(5)
    assert metric.similarity(h_a, h_b).item() == pytest.approx(4 / 5**0.5, abs=1e-6)
    assert metric.temperature == pytest.approx(0.5)


def test_temperature_is_clamped():
    metric = LearnedMetric(dim=4, temperature=1e-4, max_logit_scale=100.0)
    assert metric.logit_scale.item() == pytest.approx(100.0)
