"""verify_weights (issue 16, part 1).

* pure torch: the Hugging Face -> engine name mapping, the tensor-parallel slices (tp 1, 2, 4,
  replicated KV heads, vocab padding) against an independent reference sharder
  (tests/weights_reference.py), the fingerprints, and the scheduler side's answers;
* the facade against the REAL upstream Engine class of this session's release with only the
  launch boundary faked: the fake tokenizer manager answers the reserved get_weights_by_name
  request with the scheduler side's code (``weightprobe.answer``) over simulated TP ranks;
* the real CPU engine of SGLang 0.5.2 (slow): push, verify, corrupt, verify, and the cost of a
  verify against the update (printed; tests/cpu_verify_probe.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import weights_reference as ref  # noqa: E402

from sglang_roll_compat import weightprobe, weightsync  # noqa: E402


# -- pure torch --------------------------------------------------------------------------------------
def test_hf_names_map_onto_the_fused_parameters_in_loader_order() -> None:
    assert weightsync.engine_name("model.layers.3.self_attn.q_proj.weight") == (
        "model.layers.3.self_attn.qkv_proj.weight",
        0,
    )
    assert weightsync.engine_name("model.layers.3.self_attn.v_proj.bias") == (
        "model.layers.3.self_attn.qkv_proj.bias",
        2,
    )
    assert weightsync.engine_name("model.layers.0.mlp.up_proj.weight") == ("model.layers.0.mlp.gate_up_proj.weight", 1)
    assert weightsync.engine_name("model.norm.weight") == ("model.norm.weight", None)
    fused = {"a.qkv_proj.weight": [1, 1, 1], "a.gate_up_proj.weight": [1, 1]}
    assert weightsync.hf_names(["a.qkv_proj.weight", "a.gate_up_proj.weight", "a.norm.weight"], fused) == [
        "a.q_proj.weight",
        "a.k_proj.weight",
        "a.v_proj.weight",
        "a.gate_proj.weight",
        "a.up_proj.weight",
        "a.norm.weight",
    ]


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_every_rank_slice_matches_the_reference_sharder(tp: int) -> None:
    """tp=4 with 2 KV heads: each head on two ranks; vocab 100 padded to 128 (rank 1 of 2 holds
    36 real rows and 28 of padding)."""
    hf = ref.hf_tensors(seed=tp)
    ranks = [ref.rank_model(hf, r, tp, dtype=torch.float32) for r in range(tp)]
    fused = {n: weightprobe._fused_rows(m, tp) for n, m in ranks[0][1].items()}
    checked = 0
    for name, tensor in hf.items():
        target, part = weightsync.engine_name(name)
        rows = fused.get(target.rsplit(".", 1)[0])
        shards = weightsync.shards(list(tensor.shape), [list(p[target].shape) for p, _ in ranks], part, rows)
        for shard in shards:
            local = ranks[shard.rank][0][target]
            got = local if shard.dim < 0 else local.narrow(max(shard.dim, 0), shard.local_start, shard.length)
            assert torch.equal(got, weightsync.hf_slice(tensor, shard)), (name, shard)
            checked += 1
    assert checked == len(hf) * tp


def test_slices_that_cannot_be_taken_are_refused() -> None:
    with pytest.raises(ValueError, match="do not split"):
        weightsync.shards([30, 8], [[16, 8], [16, 8]], part=0, part_rows=[7, 4, 4])
    with pytest.raises(ValueError, match="engine shape"):
        weightsync.shards([30, 8], [[30, 9]])


def test_fingerprints_see_one_flipped_bit_and_are_dtype_exact() -> None:
    t = torch.randn(64, 32).to(torch.bfloat16)
    same = t.clone()
    flipped = t.clone()
    flipped.view(torch.int16)[3, 5] ^= 1
    fp = weightprobe.fingerprint(t)
    assert fp == weightprobe.fingerprint(same)
    other = weightprobe.fingerprint(flipped)
    assert fp["word_sum"] != other["word_sum"] and fp["weighted_sum"] != other["weighted_sum"]
    assert fp["dtype"] == "bfloat16" and fp["shape"] == [64, 32]
    swapped = t.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # same words, other order: the weighted sum sees it
    assert weightprobe.fingerprint(swapped)["word_sum"] == fp["word_sum"]
    assert weightprobe.fingerprint(swapped)["weighted_sum"] != fp["weighted_sum"]
    big = torch.randn(3 * weightprobe.ROW * 4 + 5).to(torch.bfloat16)  # whole rows, leftover words and bytes
    moved = big.clone()
    moved[: weightprobe.ROW * 4], moved[weightprobe.ROW * 4 : 2 * weightprobe.ROW * 4] = (
        big[weightprobe.ROW * 4 : 2 * weightprobe.ROW * 4].clone(),
        big[: weightprobe.ROW * 4].clone(),
    )  # two whole rows swapped
    assert weightprobe.fingerprint(moved)["weighted_sum"] != weightprobe.fingerprint(big)["weighted_sum"]
    # a view at an odd byte offset, and a byte count that is no multiple of 8
    odd = torch.arange(11, dtype=torch.uint8)
    expected = int.from_bytes(bytes(range(1, 9)), "little") + 9 + 256 * 10
    assert weightprobe.fingerprint(odd[1:])["word_sum"] == f"{expected:016x}"
    # the expected fingerprint casts first, as loading into a bf16 parameter does
    f32 = t.float() + 1e-4
    assert weightsync.expected_fingerprint(
        f32, weightsync.Shard(0, -1, 0, 0, 64), "bfloat16"
    ) == weightprobe.fingerprint(f32.to(torch.bfloat16))
    assert (
        weightprobe.fingerprint(t[:, :0])["weighted_sum"]
        == weightprobe.fingerprint(torch.empty(0))["weighted_sum"]
        == "0" * 16
    )


def test_batched_fingerprints_equal_one_by_one_on_both_implementations() -> None:
    tensors = [
        torch.randn(64, 32).to(torch.bfloat16),
        None,
        torch.arange(11, dtype=torch.uint8)[1:],  # odd offset, a tail of 2 bytes
        torch.randn(3 * weightprobe.ROW + 5),
        torch.empty(0),
        torch.randn(8, 6)[:, 1:4],  # not contiguous
    ]
    expected = [None if t is None else weightprobe.fingerprint(t) for t in tensors]
    assert weightprobe.fingerprints(tensors) == expected
    # the accelerator path (0-d results, one read for all), run here on CPU tensors
    assert weightprobe.fingerprints(iter(tensors), weightprobe._Device) == expected
    changed = [t if i != 3 else t + 1 for i, t in enumerate(tensors)]
    got = weightprobe.fingerprints(changed, weightprobe._Device)
    assert got[3] != expected[3] and got[:3] == expected[:3] and got[4:] == expected[4:]


def test_the_torch_reductions_for_accelerators_give_the_numpy_numbers() -> None:
    for n in (0, 7, 8, 4096 * 8, 4096 * 8 * 3 + 13, 100_003):
        raw = torch.randint(0, 256, (n,), dtype=torch.uint8)
        host = weightprobe.checksums(raw, weightprobe._Host)
        assert host == weightprobe.checksums(raw, weightprobe._Device), n
        assert weightprobe.fingerprint(raw)["word_sum"] == f"{host[0]:016x}"
        assert (
            host[0] == (sum(int.from_bytes(raw[i : i + 8].numpy().tobytes(), "little") for i in range(0, n, 8))) % 2**64
        )


def test_the_scheduler_side_answers_describe_fingerprint_and_fetch() -> None:
    hf = ref.hf_tensors()
    params, modules = ref.rank_model(hf, 1, 2)
    name = weightprobe.request_name({"op": "describe"})
    packed = weightprobe.answer(params, modules, name, rank=1, tp_size=2, gather=lambda mine: [mine, mine])
    assert all(isinstance(f, float) and f == int(f) for f in packed[1:])  # upstream's parameter type
    answer = weightprobe.decode(packed)
    assert answer is not None and answer["sglang_roll_compat"] == weightprobe.PROTOCOL and len(answer["ranks"]) == 2
    described = answer["ranks"][0]
    assert described["fused"]["model.layers.0.self_attn.qkv_proj.weight"] == [16, 8, 8]
    assert described["fused"]["model.layers.0.mlp.gate_up_proj.weight"] == [24, 24]
    assert described["params"]["model.norm.weight"] == [[ref.HIDDEN], "bfloat16"]
    seg = ["model.norm.weight", -1, 0, [32, 32]]
    fp = weightprobe.answer_rank(params, modules, {"op": "fingerprint", "segments": [seg, ["nope", -1, 0, [1]]]}, 1, 2)
    assert fp["fingerprints"][0] == weightprobe.fingerprint(params["model.norm.weight"])
    assert fp["fingerprints"][1] is None
    got = weightprobe.answer_rank(params, modules, {"op": "fetch", "segments": [seg]}, 1, 2)["values"][0]
    assert json.loads(json.dumps(got)) == got  # travels as JSON over HTTP
    assert torch.equal(weightprobe.unpack(got), params["model.norm.weight"])
    bad = weightprobe.decode(weightprobe.answer(params, modules, weightprobe.request_name({"op": "nope"}), 0, 1))
    assert bad is not None and "unknown verify_weights op" in bad["ranks"][0]["error"]


def test_the_report() -> None:
    report = weightsync.WeightReport(
        ("a",), (weightsync.Mismatch("b", 0.5, "bytes differ"),), ("c",), (weightsync.UnknownName("d", ("a",)),)
    )
    assert not report.ok and not report.complete
    assert "mismatched b (max abs diff 0.5)" in str(report) and "did you mean a?" in str(report)
    good = weightsync.WeightReport(("a",), (), ("c",), ())
    assert good.ok and not good.complete
    with pytest.raises(AttributeError):
        good.ok = False  # type: ignore[misc]


# -- the facade with the launch boundary faked ----------------------------------------------------------
def _answering(fake: Any, ranks: list[tuple[dict[str, Any], dict[str, Any]]], calls: list[str]) -> None:
    """Make the fake tokenizer manager answer the reserved request as the real schedulers do."""
    import fake_launch

    tm = fake_launch.tm(fake)
    upstream_answer = tm.get_weights_by_name

    async def get_weights_by_name(obj: Any, request: Any = None) -> Any:
        assert type(obj).__name__ == "GetWeightsByNameReqInput"
        if not obj.name.startswith(weightprobe.PREFIX):
            return await upstream_answer(obj, request)
        tm.record("get_weights_by_name", obj)
        calls.append(json.loads(obj.name[len(weightprobe.PREFIX) :])["op"])
        tp = len(ranks)
        mine = [
            weightprobe.answer_rank(p, m, json.loads(obj.name[len(weightprobe.PREFIX) :]), r, tp)
            for r, (p, m) in enumerate(ranks)
        ]
        return weightprobe.answer(ranks[0][0], ranks[0][1], obj.name, 0, tp, gather=lambda _: mine)

    tm.get_weights_by_name = get_weights_by_name


def _engine(fake: Any, tp: int, hf: dict[str, Any]) -> tuple[Any, list[str]]:
    from helpers import engine_args

    from sglang_roll_compat import Engine

    engine = Engine(**engine_args(tp_size=tp))
    calls: list[str] = []
    _answering(fake, [ref.rank_model(hf, r, tp) for r in range(tp)], calls)
    return engine, calls


@pytest.mark.sglang
@pytest.mark.parametrize("tp", [1, 2])
def test_a_correct_push_verifies_and_a_corrupted_tensor_is_reported(fake: Any, tp: int) -> None:
    hf = ref.hf_tensors(seed=7)
    engine, calls = _engine(fake, tp, hf)
    try:
        assert engine.capabilities()["verify_weights"]["support"] == "adapted"
        report = engine.verify_weights(list(hf.items()))
        assert report.ok and report.complete, str(report)
        assert sorted(report.matched) == sorted(hf)
        assert calls == ["describe", "fingerprint"], "one layout request per engine, one fingerprint request per call"
        wrong = dict(hf)
        name = "model.layers.1.self_attn.k_proj.weight"
        wrong[name] = hf[name].clone()
        wrong[name][3, 4] += 2.0
        report = engine.verify_weights(list(wrong.items()))
        assert not report.ok
        assert [m.name for m in report.mismatched] == [name]
        assert report.mismatched[0].max_abs_diff == pytest.approx(2.0, abs=0.02)  # bf16 in the engine
        assert calls[-2:] == ["fingerprint", "fetch"], "the engine's tensor is fetched for the mismatched name only"
        assert len(report.matched) == len(hf) - 1
    finally:
        engine.shutdown()


@pytest.mark.sglang
def test_unknown_names_get_suggestions_and_missing_ones_are_listed(fake: Any) -> None:
    hf = ref.hf_tensors()
    engine, _ = _engine(fake, 1, hf)
    try:
        some = [
            ("model.layers.0.self_attn.q_proj.weight", hf["model.layers.0.self_attn.q_proj.weight"]),
            ("model.layers.0.self_attn.q_proj.wieght", hf["model.layers.0.self_attn.q_proj.weight"]),
        ]
        report = engine.verify_weights(some)
        assert report.matched == ("model.layers.0.self_attn.q_proj.weight",)
        (unknown,) = report.unknown
        assert unknown.name == "model.layers.0.self_attn.q_proj.wieght"
        assert "model.layers.0.self_attn.q_proj.weight" in unknown.suggestions
        assert not report.ok
        assert "model.layers.0.self_attn.k_proj.weight" in report.missing
        assert "model.layers.0.self_attn.q_proj.weight" not in report.missing
        assert len(report.missing) == len(hf) - 1
        shape = engine.verify_weights([("model.norm.weight", torch.ones(ref.HIDDEN + 1))])
        assert shape.mismatched[0].max_abs_diff is None and "not comparable" in shape.mismatched[0].reason
    finally:
        engine.shutdown()


@pytest.mark.sglang
def test_the_answer_survives_the_release_s_output_type_and_transport() -> None:
    """0.5.20+ decode the scheduler's msgpack against ``parameter``'s declared type."""
    import importlib
    import pickle

    io = importlib.import_module("sglang.srt.managers.io_struct")
    params, modules = ref.rank_model(ref.hf_tensors(), 0, 1)
    packed = weightprobe.answer(params, modules, weightprobe.request_name({"op": "describe"}), 0, 1)
    out = io.GetWeightsByNameReqOutput(parameter=packed)
    if hasattr(io, "msgpack_encode") and hasattr(io, "msgpack_decode"):
        out = io.msgpack_decode(io.msgpack_encode(out))
    else:
        out = pickle.loads(pickle.dumps(out))
    answer = weightprobe.decode(out.parameter)
    assert answer is not None and set(answer["ranks"][0]["params"]) == set(params)


@pytest.mark.sglang
def test_the_hook_wraps_the_method_the_release_s_scheduler_dispatches() -> None:
    """Read from the release's scheduler.py: which object's get_weights_by_name its request
    dispatcher calls; that class is one of weightprobe.TARGETS and has the method."""
    import importlib
    import importlib.util
    import re

    spec = importlib.util.find_spec("sglang.srt.managers.scheduler")
    assert spec is not None and spec.origin
    source = Path(spec.origin).read_text(encoding="utf-8")
    match = re.search(r"GetWeightsByNameReqInput,\s*self\.(\w+\.)?get_weights_by_name", source)
    assert match, "no get_weights_by_name in the scheduler's dispatcher"
    module_name, class_name = weightprobe.TARGETS[0 if match.group(1) is None else 1]
    if match.group(1) is not None:
        assert match.group(1) == "weight_updater."
    cls = getattr(importlib.import_module(module_name), class_name)
    assert callable(getattr(cls, "get_weights_by_name", None))


@pytest.mark.sglang
def test_bad_input_is_refused_before_anything_is_sent(fake: Any) -> None:
    import fake_launch

    engine, calls = _engine(fake, 1, ref.hf_tensors())
    try:
        t = torch.ones(2)
        for bad, error in (
            ([], ValueError),
            ([("a", t), ("a", t)], ValueError),
            ([("a", [1.0])], TypeError),
            ({"a": t}, TypeError),
            ([("", t)], TypeError),
        ):
            with pytest.raises(error):
                engine.verify_weights(bad)
        assert calls == [] and fake_launch.tm(fake).requests("get_weights_by_name") == []
    finally:
        engine.shutdown()


@pytest.mark.sglang
def test_an_engine_without_the_scheduler_hook_is_refused_naming_the_release(fake: Any) -> None:
    """The fake's own get_weights_by_name answers like upstream (a truncated read-out)."""
    import sglang
    from helpers import engine_args

    from sglang_roll_compat import Engine

    engine = Engine(**engine_args())
    try:
        with pytest.raises(NotImplementedError, match=f"SGLang {sglang.__version__}"):
            engine.verify_weights([("lm_head.weight", torch.ones(2))])
    finally:
        engine.shutdown()


@pytest.mark.sglang
def test_the_async_variant_inside_an_event_loop(fake: Any) -> None:
    import asyncio

    from helpers import engine_args

    from sglang_roll_compat import Engine

    hf = ref.hf_tensors()

    async def actor() -> Any:
        engine = Engine(**engine_args(tp_size=2))
        try:
            _answering(fake, [ref.rank_model(hf, r, 2) for r in range(2)], [])
            return await engine.async_verify_weights(list(hf.items()))
        finally:
            engine.shutdown()

    assert asyncio.run(actor()).ok


# -- the real CPU engine of SGLang 0.5.2 ---------------------------------------------------------------
CPU_ENGINE = os.environ.get("SGLANG_ROLL_COMPAT_CPU_ENGINE") == "1"


@pytest.mark.sglang
@pytest.mark.launch
@pytest.mark.slow
@pytest.mark.skipif(not CPU_ENGINE, reason="this release's engine does not run on a CPU (see envs/matrix.toml)")
def test_verify_weights_on_the_real_cpu_engine(tmp_path: Path) -> None:
    from helpers import package_parent

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_parent()), env.get("PYTHONPATH", "")]))
    env["SGLANG_ROLL_COMPAT_CACHE_DIR"] = str(tmp_path / "cache")
    probe = Path(__file__).parent / "cpu_verify_probe.py"
    proc = subprocess.run(
        [sys.executable, "-P", str(probe), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    out = tmp_path / "verify.json"
    assert out.exists(), proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["first"]["ok"] and result["first"]["complete"], result["first"]
    assert result["first"]["matched"] == result["n_tensors"]
    assert result["corrupted"]["ok"] is False
    assert result["corrupted"]["mismatched"] == [[result["corrupted_name"], pytest.approx(0.5, abs=0.01)]]
    assert result["after_repair"]["ok"], result["after_repair"]
    cost = result["cost"]
    print(
        f"\nverify_weights vs update_weights_from_tensor on the CPU engine ({result['n_tensors']} tensors, "
        f"{result['bytes'] / 1e6:.1f} MB): update median {cost['update_s'] * 1e3:.1f} ms, verify median "
        f"{cost['verify_s'] * 1e3:.1f} ms; verify/update per round, median {cost['ratio']:.1%} "
        f"({cost['rounds']} interleaved rounds)",
        file=sys.stderr,
    )
