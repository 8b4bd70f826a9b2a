"""A damaged model.pt (garbage, truncated) is one line naming the file, in load_model and in the commands using it."""

import shutil

import pytest
import torch

from rsretrieve.model.checkpoint import load_model
from tests.conftest import run_cli


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint" * 64 if how == "garbage" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_load_model_names_a_damaged_file(small_workspace, tmp_path, how):
    path = tmp_path / "model.pt"
    shutil.copy(small_workspace / "checkpoints" / "default" / "model.pt", path)
    if how == "empty":
        path.write_bytes(b"")
    else:
        _damage(path, how)
    with pytest.raises(ValueError) as e:
        load_model(path)
    msg = str(e.value)
    reason = {"garbage": "not a weights-only torch file", "truncated": "", "empty": "empty or truncated file"}[how]
    assert msg.startswith(f"{path}: not a readable model file or checkpoint ({reason}"), msg
    assert msg.endswith("); restore it or train it again") and "\n" not in msg and "weights_only" not in msg


@pytest.mark.parametrize("command", [["query", "--tile-id", "1"], ["index"]])
def test_query_and_index_with_a_damaged_model_exit_2_in_one_line(small_workspace, tmp_path, command):
    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    path = ws / "checkpoints" / "default" / "model.pt"
    _damage(path, "truncated")
    manifest = sorted(p.read_bytes() for p in (ws / "index").rglob("manifest.json"))
    r = run_cli(command[0], "--workspace", ws, *command[1:])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"rsretrieve {command[0]}: error: {path}: not a readable model file or checkpoint (")
    assert sorted(p.read_bytes() for p in (ws / "index").rglob("manifest.json")) == manifest  # the index untouched


@pytest.mark.parametrize(("content", "reason"), [
    (b"hello world, not a model", "not a torch file: "),
    (torch.zeros(3), "a torch file holding a Tensor, not a checkpoint"),
    ([1, 2], "a torch file holding a list, not a checkpoint"),
])
def test_files_that_are_not_checkpoints_are_one_line(tmp_path, content, reason):
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path}: not a readable model file or checkpoint ({reason}"), str(e.value)


def test_a_torch_dict_without_a_model_names_the_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(ValueError) as e:
        load_model(path)
    assert str(e.value) == f"{path}: not an rsretrieve checkpoint: no model config ('config' or 'rsretrieve' entry)"


def test_a_pretrained_file_holding_a_tensor_is_one_line(tmp_path):
    from rsretrieve.training.task import _load_pretrained

    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError) as e:
        _load_pretrained(path)
    assert str(e.value) == (f"--model.pretrained {path}: not a readable model file or checkpoint (a torch file "
                            "holding a Tensor, not a checkpoint)")
