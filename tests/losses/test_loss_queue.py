"""Memory queue: FIFO order, wrap-around, per-sensor selection, normalisation, checkpoint state."""

import torch

from rsretrieve.losses import MemoryQueue


def test_fifo_overwrites_oldest_rows():
    q = MemoryQueue(size=4, dim=2)
    assert len(q) == 0
    q.push(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]), torch.tensor([1, 2, 3]), sensor=0)
    assert len(q) == 3
    q.push(torch.tensor([[0.0, 5.0], [6.0, 0.0]]), torch.tensor([4, 5]), sensor=1)
    assert len(q) == 4
    emb, cells = q.get()
    assert cells.tolist() == [5, 2, 3, 4]  # row 0 (cell 1) was the oldest and got overwritten by cell 5
    assert torch.allclose(emb.norm(dim=1), torch.ones(4))  # stored unit-norm
    assert int(q.ptr) == 1


def test_get_by_sensor_and_detached_storage():
    q = MemoryQueue(size=8, dim=2)
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    q.push(x, torch.tensor([7]), sensor=2)
    q.push(torch.tensor([[1.0, 0.0]]), torch.tensor([8]), sensor=0)
    emb, cells = q.get(sensor=2)
    assert cells.tolist() == [7] and not emb.requires_grad
    assert q.get(sensor=1)[0].shape == (0, 2)


def test_batch_larger_than_queue_keeps_the_newest_rows():
    q = MemoryQueue(size=2, dim=1)
    q.push(torch.ones(5, 1), torch.arange(5), sensor=0)
    assert sorted(q.get()[1].tolist()) == [3, 4]


def test_queue_state_is_in_the_state_dict():
    q = MemoryQueue(size=3, dim=2)
    q.push(torch.ones(2, 2), torch.tensor([1, 2]), sensor=0)
    r = MemoryQueue(size=3, dim=2)
    r.load_state_dict(q.state_dict())
    assert len(r) == 2 and r.get()[1].tolist() == [1, 2]
