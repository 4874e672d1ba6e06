"""Data sets of named arrays (issue 28): an ``.npz`` of ``NAME_train``/``NAME_test`` for any
NAME, a dict of tensors and a map-style torch Dataset give the same :class:`Dataset`, every
array with its own shape and dtype, sliced together; every bad archive is one UserError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_vae import data
from ppl_vae.data.fields import MAX_ARRAYS, Fields
from ppl_vae.errors import UserError

RNG = np.random.default_rng(3)
SEQ = {  # padded binary sequences with their lengths and a mask: DMM's inputs
    "seq_train": (RNG.random((7, 5, 3)) < 0.3).astype(np.float64),
    "seq_test": (RNG.random((4, 5, 3)) < 0.3).astype(np.float64),
    "lengths_train": RNG.integers(1, 6, 7).astype(np.int32),
    "lengths_test": RNG.integers(1, 6, 4).astype(np.int32),
    "mask_train": RNG.random((7, 5)) < 0.5,
    "mask_test": RNG.random((4, 5)) < 0.5,
}


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_every_named_array_is_kept_with_its_shape_and_dtype(tmp_path):
    ds = data.load(str(save(tmp_path / "s.npz", **SEQ)))
    assert ds.named and list(ds.y_train) == ["seq", "lengths", "mask"]
    for split, fields in (("train", ds.y_train), ("test", ds.y_test)):
        np.testing.assert_array_equal(fields["seq"].numpy(), SEQ[f"seq_{split}"])
        assert fields["seq"].dtype == torch.float32
        assert fields["lengths"].dtype == torch.int64 and fields["mask"].dtype == torch.bool
        np.testing.assert_array_equal(fields["lengths"].numpy(), SEQ[f"lengths_{split}"])
        np.testing.assert_array_equal(fields["mask"].numpy(), SEQ[f"mask_{split}"])
    # the data view: the first float array, one flattened row per example
    assert ds.y_train.x_name == "seq" and ds.x_train.shape == (7, 15)
    np.testing.assert_array_equal(ds.x_test.numpy(), SEQ["seq_test"].reshape(4, -1))


def test_a_slice_takes_the_same_rows_of_every_array(tmp_path):
    ds = data.load(str(save(tmp_path / "s.npz", **SEQ)))
    idx = torch.tensor([5, 0, 3])
    part = ds.y_train[idx]
    for name in ("seq", "lengths", "mask"):
        np.testing.assert_array_equal(part[name].numpy(), SEQ[f"{name}_train"][idx.numpy()])
    batch = part.with_view(ds.x_train[idx])  # the flattened view put back as it was
    np.testing.assert_array_equal(batch["seq"].numpy(), SEQ["seq_train"][idx.numpy()])


def test_x_and_y_alone_are_the_data_set_they_always_were(tmp_path):
    x = RNG.random((6, 4)).astype(np.float32)
    ds = data.load(str(save(tmp_path / "a.npz", x_train=x, x_test=x[:2], y_train=np.arange(6))))
    assert not ds.named and ds.y_train.dtype == torch.int64 and ds.y_test is None


def test_an_image_shape_entry_or_option_gives_flat_rows_their_pictures(tmp_path):
    x = RNG.random((5, 12)).astype(np.float32)
    shape = np.array([1, 3, 4])
    ds = data.load(str(save(tmp_path / "i.npz", x_train=x, x_test=x, image_shape=shape)))
    assert ds.image_shape == (1, 3, 4) and ds.image_hw == (3, 4)
    flat = str(save(tmp_path / "f.npz", x_train=x, x_test=x))
    assert data.load(flat).image_shape is None
    assert data.load(flat, image_shape=(3, 4)).image_shape == (1, 3, 4)
    with pytest.raises(UserError, match="each example has 12"):
        data.load(flat, image_shape=(1, 5, 5))


def test_a_dict_of_tensors_and_a_torch_dataset_give_the_npz_data_set(tmp_path):
    from_file = data.load(str(save(tmp_path / "s.npz", **SEQ)))
    flat = {k: torch.as_tensor(v) for k, v in SEQ.items()}
    splits = {
        s: {n: torch.as_tensor(SEQ[f"{n}_{s}"]) for n in ("seq", "lengths", "mask")}
        for s in ("train", "test")
    }

    class Items(torch.utils.data.Dataset):  # a map-style Dataset returning dicts
        def __init__(self, split):
            self.split = split

        def __len__(self):
            return len(SEQ[f"seq_{self.split}"])

        def __getitem__(self, i):
            return {n: SEQ[f"{n}_{self.split}"][i] for n in ("seq", "lengths", "mask")}

    for source in (flat, splits, {"train": Items("train"), "test": Items("test")}):
        ds = data.as_dataset(source)
        assert torch.equal(ds.x_train, from_file.x_train)
        for name in ("seq", "lengths", "mask"):
            assert torch.equal(ds.y_test[name], from_file.y_test[name])


def test_a_torch_dataset_of_tuples_is_x_and_y():
    x, y = torch.rand(6, 3), torch.arange(6) % 2
    ds = data.as_dataset(
        {
            "train": torch.utils.data.TensorDataset(x, y),
            "test": torch.utils.data.TensorDataset(x[:2], y[:2]),
        }
    )
    assert torch.equal(ds.x_train, x) and torch.equal(ds.y_train, y) and not ds.named


def object_array(path):
    np.savez(path, a_train=np.array([{"k": 1}] * 3, dtype=object), a_test=np.zeros(3))


def hundreds(path):
    np.savez(path, **{f"a{i}_{s}": np.zeros(2) for i in range(150) for s in ("train", "test")})


CASES = {
    "object arrays (never unpickled)": (object_array, "must be numeric"),
    "hundreds of arrays": (hundreds, "over the limit of 64"),
    "lengths disagree between names": (
        lambda p: save(p, **{**SEQ, "lengths_train": np.ones(6, np.int64)}),
        "disagree on the number of examples",
    ),
    "a name without its test split": (
        lambda p: save(p, **{k: v for k, v in SEQ.items() if k != "mask_test"}),
        "lacks mask_test",
    ),
    "a stray name": (lambda p: save(p, **SEQ, other=np.zeros(3)), "neither NAME_train"),
    "shapes differ between splits": (
        lambda p: save(p, **{**SEQ, "seq_test": np.zeros((4, 6, 3))}),
        "same shape per example in both splits",
    ),
    "NaN in a named array": (
        lambda p: save(p, **SEQ, w_train=np.full(7, np.nan), w_test=np.zeros(4)),
        "NaN or infinite",
    ),
    "a bad image_shape entry": (lambda p: save(p, **SEQ, image_shape=np.array([0, 3])), "image_"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_named_archive_is_one_user_error(tmp_path, case):
    make, match = CASES[case]
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError, match=match) as info:
        data.load(str(path))
    assert "\n" not in str(info.value)


def test_fields_refuse_disagreeing_rows_and_too_many_arrays():
    with pytest.raises(UserError, match="disagree"):
        Fields({"x": torch.zeros(3, 2), "n": torch.zeros(2)})
    with pytest.raises(UserError, match="over the limit"):
        Fields({f"a{i}": torch.zeros(1) for i in range(MAX_ARRAYS + 1)}, x_name="a0")


def test_the_validation_rows_of_early_stopping_take_every_array_alike(tmp_path):
    from ppl_vae.data.dataset import validation_split

    ds = data.load(str(save(tmp_path / "s.npz", **SEQ)))
    rest, (x_val, fields_val) = validation_split(ds)
    assert len(rest.y_train) == rest.x_train.shape[0] == 6 and len(fields_val) == 1
    row = next(i for i in range(7) if torch.equal(ds.x_train[i], x_val[0]))
    assert torch.equal(fields_val["lengths"], ds.y_train["lengths"][row : row + 1])
