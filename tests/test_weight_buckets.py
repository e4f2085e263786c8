"""How update_weights_from_tensor cuts a weight set into buckets (sglang_roll_compat.weightbuckets):
pure logic, no SGLang and no torch needed (tensors are stood in by objects with the four
attributes the plan reads)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sglang_roll_compat import weightbuckets
from sglang_roll_compat.weightbuckets import MIN_BUCKET_BYTES, check_bucket_bytes, plan

MiB = 1 << 20


@dataclass(frozen=True)
class T:
    """Just what the plan reads of a tensor."""

    n: int
    dtype: str = "bfloat16"
    device: str = "cuda:0"
    size: int = 2

    def numel(self) -> int:
        return self.n

    def element_size(self) -> int:
        return self.size


def names(buckets: list[list[tuple[str, T]]]) -> list[list[str]]:
    return [[n for n, _ in b] for b in buckets]


def test_buckets_fill_up_to_the_limit_in_order() -> None:
    tensors = [(f"t{i}", T(MiB // 4)) for i in range(9)]  # 512 KiB each in bf16
    assert names(plan(tensors, MiB)) == [["t0", "t1"], ["t2", "t3"], ["t4", "t5"], ["t6", "t7"], ["t8"]]
    assert names(plan(tensors, 3 * MiB // 2)) == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6", "t7", "t8"]]
    assert names(plan(tensors, 64 * MiB)) == [[f"t{i}" for i in range(9)]]


def test_a_tensor_larger_than_the_limit_travels_alone() -> None:
    tensors = [("small", T(10)), ("huge", T(4 * MiB)), ("after", T(10))]
    assert names(plan(tensors, MiB)) == [["small"], ["huge"], ["after"]]


def test_one_dtype_and_one_device_per_bucket_every_tensor_once() -> None:
    tensors = [
        ("a", T(100)),
        ("b", T(100, dtype="float32", size=4)),
        ("c", T(100)),
        ("d", T(100, device="cpu")),
        ("e", T(100, dtype="float32", size=4)),
    ]
    buckets = plan(tensors, MiB)
    assert names(buckets) == [["a", "c"], ["b", "e"], ["d"]]
    for bucket in buckets:
        assert len({(t.dtype, t.device) for _, t in bucket}) == 1
    assert sorted(n for b in buckets for n, _ in b) == sorted(n for n, _ in tensors)
    # per-tensor requests (releases without flattened buckets) need no grouping: size only
    assert names(plan(tensors, MiB, by_dtype=False)) == [["a", "b", "c", "d", "e"]]


def test_the_limit_counts_bytes_not_elements() -> None:
    tensors = [("f32", T(MiB // 4, dtype="float32", size=4)), ("f32b", T(MiB // 4, dtype="float32", size=4))]
    assert names(plan(tensors, MiB)) == [["f32"], ["f32b"]]  # 1 MiB each: one per bucket
    assert weightbuckets.nbytes(tensors[0][1]) == MiB


def test_bucket_bytes_is_checked() -> None:
    assert check_bucket_bytes(None) == weightbuckets.DEFAULT_BUCKET_BYTES
    assert check_bucket_bytes(MIN_BUCKET_BYTES) == MIN_BUCKET_BYTES
    for bad, error in [
        (0, ValueError),
        (MIN_BUCKET_BYTES - 1, ValueError),
        (-5, ValueError),
        (True, TypeError),
        ("512", TypeError),
        (1.5e9, TypeError),
    ]:
        with pytest.raises(error):
            check_bucket_bytes(bad)


def test_release_ipc_memory_is_a_no_op_without_cuda_tensors() -> None:
    class Dev:
        type = "cpu"

    class CpuTensor:
        device = Dev()

    weightbuckets.release_ipc_memory([("a", CpuTensor())])  # must not import or touch torch.cuda
