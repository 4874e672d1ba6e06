"""The ``.npz`` loader against every bad file: one UserError each, never another
exception; whatever it accepts is finite float32 rows of one width with matching labels.
The properties run over generated archives (any keys, dtypes, shapes, NaN/inf) and over
corrupted bytes (truncations, flipped bytes) of a good file."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppl_vae import data
from ppl_vae.errors import UserError

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
X = np.random.default_rng(0).random((10, 4))


def check_accepted(ds: data.Dataset, arrays: dict[str, np.ndarray] | None = None) -> None:
    """The loader's promise for anything it accepts (and, given the arrays, the oracle:
    the rows are the arrays flattened and cast to float32)."""
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == torch.float32 and x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] >= 1
        assert torch.isfinite(x).all()
    assert ds.x_train.shape[1] == ds.x_test.shape[1]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert y is None or (y.dtype == torch.int64 and y.shape == (x.shape[0],))
    if arrays is not None:
        for key, x in (("x_train", ds.x_train), ("x_test", ds.x_test)):
            a = arrays[key]
            expected = a.reshape(a.shape[0], -1).astype(np.float32)
            np.testing.assert_array_equal(x.numpy(), expected)


def load_or_user_error(path) -> data.Dataset | None:
    """``load_npz``: a Dataset, or None when it raised UserError; any other exception
    fails the test."""
    try:
        return data.load_npz(path)
    except UserError as exc:
        assert "\n" not in str(exc)  # one line
        return None


dtypes = st.one_of(
    hnp.floating_dtypes(sizes=(16, 32, 64)),
    hnp.integer_dtypes(),
    hnp.unsigned_integer_dtypes(),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(max_len=3),
    hnp.byte_string_dtypes(max_len=3),
    hnp.datetime64_dtypes(),
)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)
keys = st.sampled_from(["x_train", "x_test", "y_train", "y_test", "other"])


@SETTINGS
@given(st.dictionaries(keys, arrays, max_size=5), st.booleans())
def test_any_archive_loads_cleanly_or_is_one_user_error(tmp_path, contents, compressed):
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, **contents)
    ds = load_or_user_error(path)
    if ds is not None:
        check_accepted(ds, contents)


@SETTINGS
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 6),
    d=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int16, np.bool_]),
    labels=st.booleans(),
)
def test_well_formed_archives_are_accepted_exactly(tmp_path, n, m, d, dtype, labels):
    rng = np.random.default_rng(n * 100 + m * 10 + d)
    contents = {
        "x_train": (rng.random((n, d)) * 3).astype(dtype),
        "x_test": (rng.random((m, d)) * 3).astype(dtype),
    }
    if labels:
        contents |= {"y_train": rng.integers(0, 9, n), "y_test": rng.integers(0, 9, (m, 1))}
    np.savez(tmp_path / "d.npz", **contents)
    ds = data.load_npz(tmp_path / "d.npz")
    check_accepted(ds, contents)
    if labels:
        assert ds.y_test.tolist() == contents["y_test"].ravel().tolist()


def good_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=X, x_test=X[:3], y_train=np.arange(10))
    return buf.getvalue()


GOOD = good_bytes()


@SETTINGS
@given(st.integers(0, len(GOOD) - 1))
def test_every_truncation_is_one_user_error(tmp_path, cut):
    path = tmp_path / "t.npz"
    path.write_bytes(GOOD[:cut])
    assert load_or_user_error(path) is None


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1))
def test_flipped_bytes_load_cleanly_or_are_one_user_error(tmp_path, flips):
    raw = bytearray(GOOD)
    for i, b in flips:
        raw[i] = b
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(raw))
    ds = load_or_user_error(path)
    if ds is not None:
        check_accepted(ds)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_are_one_user_error(tmp_path, blob):
    path = tmp_path / "r.npz"
    path.write_bytes(blob)
    assert load_or_user_error(path) is None


def header_only(shape, descr="<f8", extra=b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + extra


def zip_of(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, body in members.items():
            z.writestr(name, body)


def save(**kw):
    return lambda p: np.savez(p, **kw)


def truncated(p):
    p.write_bytes(GOOD[: len(GOOD) // 2])


CASES = {
    "empty archive (0 rows)": (save(x_train=X[:0], x_test=X[:0]), "at least one example"),
    "zero features": (save(x_train=X[:, :0], x_test=X[:, :0]), "at least one feature"),
    "zero-byte file": (lambda p: p.write_bytes(b""), "not an .npz archive"),
    "truncated": (truncated, "not an .npz archive"),
    ".npy renamed .npz": (lambda p: np.save(open(p, "wb"), X), "single .npy array"),
    "text file": (lambda p: p.write_text("x_train,x_test\n1,2\n"), "not an .npz archive"),
    "missing x_test": (save(x_train=X), "lacks x_test"),
    "no arrays": (save(), "lacks x_train, x_test"),
    "widths differ": (save(x_train=X, x_test=np.zeros((2, 5))), "same width"),
    "image shapes differ": (
        save(x_train=np.zeros((2, 3, 3)), x_test=np.zeros((2, 3, 4))),
        "image shape",
    ),
    "rank 1": (save(x_train=X[0], x_test=X), "one example per row|\\(N, D\\)"),
    "rank 4": (save(x_train=np.zeros((2, 2, 2, 2)), x_test=X), "\\(N, D\\)"),
    "NaN": (save(x_train=np.where(X > 0.5, np.nan, X), x_test=X), "NaN or infinite"),
    "inf": (save(x_train=X, x_test=np.full((2, 4), -np.inf)), "NaN or infinite"),
    "overflows float32": (save(x_train=X * 1e300, x_test=X), "NaN or infinite"),
    "strings": (save(x_train=np.array([["a", "b"]]), x_test=X), "must be numeric"),
    "complex": (save(x_train=X + 1j, x_test=X), "must be numeric"),
    "object array": (
        save(x_train=np.array([[1, None]], dtype=object), x_test=X),
        "must be numeric",
    ),
    "labels too few": (save(x_train=X, x_test=X, y_train=np.arange(9)), "labels, one per row"),
    "labels 2-d": (save(x_train=X, x_test=X, y_test=np.zeros((10, 2))), "labels, one per row"),
    "labels NaN": (save(x_train=X, x_test=X, y_train=np.full(10, np.nan)), "non-integer"),
    "labels strings": (save(x_train=X, x_test=X, y_train=np.array(["a"] * 10)), "numeric"),
    "absurd size": (
        lambda p: zip_of(
            p, {"x_train.npy": header_only((10**9, 10**3)), "x_test.npy": header_only((1, 1))}
        ),
        "over the 8 GiB limit",
    ),
    "header longer than its data": (
        lambda p: zip_of(
            p, {"x_train.npy": header_only((10, 4), extra=b"\0" * 8), "x_test.npy": b""}
        ),
        "could not read",
    ),
    "broken header": (
        lambda p: zip_of(p, {"x_train.npy": b"\x93NUMPY\x01\x00\x05\x00{'a'", "x_test.npy": b""}),
        "could not read",
    ),
    "a directory": (lambda p: p.mkdir(), "is a directory"),
    "missing file": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_file_is_one_user_error_naming_the_problem(tmp_path, case):
    make, match = CASES[case]
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError, match=match):
        data.load_npz(path)
    with pytest.raises(UserError, match=match):  # and through the public entry point
        data.load(str(path))
