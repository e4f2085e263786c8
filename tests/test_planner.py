"""The ROLL planner: device_mapping parsing (hostile strings too), layout, ports, config shapes, CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_isolated

from sglang_roll_compat import serverargs
from sglang_roll_compat.errors import PlanError
from sglang_roll_compat.roll import planner
from sglang_roll_compat.roll.planner import parse_device_mapping, plan_engines, plan_from_config

# the ServerArgs fields these tests use (the real ones are checked in the sglang sessions)
KNOWN = frozenset(
    {
        "model_path",
        "tp_size",
        "pp_size",
        "dp_size",
        "enable_dp_attention",
        "mem_fraction_static",
        "load_format",
        "base_gpu_id",
        "gpu_id_step",
        "port",
        "nccl_port",
        "dist_init_addr",
        "nnodes",
        "node_rank",
        "enable_memory_saver",
        "context_length",
        "dtype",
    }
)
KNOWN_046 = KNOWN - {"nccl_port"}


def make(
    cfg: dict[str, Any] | None = None, mapping: object = "list(range(0,8))", n: object = 1, **kw: Any
) -> planner.Plan:
    kw.setdefault("known_fields", KNOWN)
    return plan_engines(cfg or {}, mapping, n, **kw)


# -- device_mapping ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list(range(0,24))", list(range(24))),
        ("list(range(0, 8, 2))", [0, 2, 4, 6]),
        ("list(range(4))", [0, 1, 2, 3]),
        ("  list(range(16, 24))  ", list(range(16, 24))),
        ("[0, 1, 2]", [0, 1, 2]),
        ("[*range(0,4), *range(8,12)]", [0, 1, 2, 3, 8, 9, 10, 11]),
        ("list(range(0,4)) + list(range(8,12))", [0, 1, 2, 3, 8, 9, 10, 11]),
        ("[0, 1] + [4, 5] + list(range(6, 8))", [0, 1, 4, 5, 6, 7]),
        ("list([3, 2])", [3, 2]),
        ("range(2)", [0, 1]),
        ("list(range(7, -1, -1))", [7, 6, 5, 4, 3, 2, 1, 0]),
    ],
)
def test_device_mapping_string_forms(text: str, expected: list[int]) -> None:
    assert parse_device_mapping(text) == expected


def test_device_mapping_lists_pass_through() -> None:
    assert parse_device_mapping([4, 5, 6]) == [4, 5, 6]
    assert parse_device_mapping((0,)) == [0]


def test_long_plus_chain_is_flattened_without_recursion() -> None:
    text = "+".join(f"[{i}]" for i in range(700))
    assert len(text) <= planner.MAX_EXPR_CHARS
    assert parse_device_mapping(text) == list(range(700))


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "list(range(10**12))",
        "list(range(2 ** 40))",
        "list(range(1000000000000))",
        "list(range(0, 1048576))",  # within the id bound, beyond MAX_GPUS entries
        "os.getcwd()",
        "list(range(3)).__class__",
        "lambda: [0]",
        "(lambda: [0])()",
        "[x for x in range(3)]",
        "open('/etc/passwd')",
        "list(map(int, '01'))",
        "list(range(n))",
        "list(range(0, 8, 0))",
        "list(range(step=1))",
        "list(range(*[0, 4]))",
        "[*[0, 1]]",
        "[0, 1.5]",
        "[True, False]",
        "['0']",
        "[[0]]",
        "[0] * 8",
        "list(range(0,4)) - [1]",
        "list()",
        "list(x=range(3))",
        "{0, 1}",
        "(0, 1)",
        "0",
        "",
        "[0, 1",
        "list(range(0,8)); import os",
        "[" * 300 + "]" * 300,
        "[0]" + "+[0]" * 1100,  # longer than MAX_EXPR_CHARS
        "\x00",
    ],
)
def test_hostile_or_unsupported_strings_are_refused(text: str) -> None:
    with pytest.raises(PlanError, match="device_mapping"):
        parse_device_mapping(text)


def test_hostile_string_has_no_side_effect(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(PlanError, match="not allowed"):
        parse_device_mapping(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()


def test_refusal_names_the_offending_part() -> None:
    with pytest.raises(PlanError, match=r"call to '__import__' is not allowed"):
        parse_device_mapping("__import__('os')")
    with pytest.raises(PlanError, match="integer literals"):
        parse_device_mapping("list(range(10**12))")
    with pytest.raises(PlanError, match="more than 65536 GPUs"):
        parse_device_mapping("list(range(0, 1048576))")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([0, -1], "negative"),
        ("[0, -1]", "negative"),
        ([0, 1, 1, 2, 2], r"more than once: \[1, 2\]"),
        ("list(range(4)) + [3]", "more than once"),
        (["0"], "integer GPU ids"),
        ([True], "integer GPU ids"),
        ([0.0], "integer GPU ids"),
        ([], "empty"),
        ("[]", "empty"),
        (None, "missing"),
        (3.5, "must be a list"),
        ({"a": 1}, "must be a list"),
    ],
)
def test_bad_ids(value: object, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        parse_device_mapping(value)


# -- layout -----------------------------------------------------------------------------------
def test_roll_guide_example_24_gpus_2_per_engine() -> None:
    plan = make({"mem_fraction_static": 0.7, "load_format": "dummy"}, "list(range(0,24))", 2)
    assert len(plan.engines) == 12
    assert [e.node for e in plan.engines] == [0] * 4 + [1] * 4 + [2] * 4
    assert [e.server_args["base_gpu_id"] for e in plan.engines] == [0, 2, 4, 6] * 3
    assert all(e.server_args["tp_size"] == 2 for e in plan.engines)
    assert all(e.server_args["load_format"] == "dummy" for e in plan.engines)
    assert plan.engines[5].gpu_ids == (10, 11)
    assert plan.engines[5].local_gpu_ids == (2, 3)
    assert [e.worker_name for e in plan.engines[:3]] == ["actor_infer-0", "actor_infer-1", "actor_infer-2"]
    assert plan.names_checked


def test_multi_node_16_gpus_8_per_node_4_per_engine() -> None:
    plan = make({}, list(range(16)), 4, num_gpus_per_node=8)
    assert [(e.node, e.slot, e.server_args["base_gpu_id"]) for e in plan.engines] == [
        (0, 0, 0),
        (0, 1, 4),
        (1, 0, 0),
        (1, 1, 4),
    ]
    assert [e.server_args["port"] for e in plan.engines] == [30000, 30100, 30000, 30100]
    assert [e.server_args["nccl_port"] for e in plan.engines] == [30001, 30101, 30001, 30101]
    assert plan.engines[3].gpu_ids == (12, 13, 14, 15)
    assert plan.as_dict()["num_engines"] == 4
    json.dumps(plan.as_dict())  # serialisable


def test_local_index_uses_num_gpus_per_node() -> None:
    plan = make({}, "list(range(4, 8))", 2, num_gpus_per_node=4)
    assert [(e.node, e.server_args["base_gpu_id"]) for e in plan.engines] == [(1, 0), (1, 2)]


def test_mapping_not_divisible() -> None:
    with pytest.raises(PlanError, match=r"len\(device_mapping\)=6 is not divisible by num_gpus_per_worker=4"):
        make({}, list(range(6)), 4)


@pytest.mark.parametrize(
    ("mapping", "n", "match"),
    [
        ([6, 7, 8, 9], 4, r"straddles nodes \[0, 1\]"),
        ("list(range(0, 8, 2))", 2, "not contiguous"),
        ([1, 0], 2, "not contiguous"),
        ([0, 2, 3, 4], 2, "not contiguous"),
    ],
)
def test_engine_gpus_must_be_contiguous_on_one_node(mapping: object, n: int, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        make({}, mapping, n)


def test_strided_mapping_with_one_gpu_per_engine_is_fine() -> None:
    plan = make({}, "list(range(0, 8, 2))", 1)
    assert [e.server_args["base_gpu_id"] for e in plan.engines] == [0, 2, 4, 6]


def test_engine_larger_than_a_node() -> None:
    with pytest.raises(PlanError, match="more than num_gpus_per_node=8"):
        make({}, list(range(16)), 16)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n": 0}, "num_gpus_per_worker must be a positive integer"),
        ({"n": True}, "num_gpus_per_worker"),
        ({"n": "2"}, "num_gpus_per_worker"),
        ({"num_gpus_per_node": 0}, "num_gpus_per_node"),
        ({"port_base": 80}, "port_base"),
        ({"port_base": 70000}, "port_base"),
        ({"port_stride": 2}, "port_stride"),
        ({"role": ""}, "role"),
    ],
)
def test_bad_parameters(kw: dict[str, Any], match: str) -> None:
    n = kw.pop("n", 1)
    with pytest.raises(PlanError, match=match):
        make({}, [0], n, **kw)


def test_strategy_config_must_be_a_mapping() -> None:
    with pytest.raises(PlanError, match="strategy_config must be a mapping"):
        plan_engines([("a", 1)], [0], 1, known_fields=KNOWN)  # type: ignore[arg-type]
    assert plan_engines(None, [0], 1, known_fields=KNOWN).engines[0].server_args["tp_size"] == 1


# -- values -----------------------------------------------------------------------------------
def test_mem_fraction_static_default_and_kept() -> None:
    plan = make({})
    assert plan.engines[0].server_args["mem_fraction_static"] == 0.7
    assert any("default 0.7" in n for n in plan.notes)
    assert make({"mem_fraction_static": 0.85}).engines[0].server_args["mem_fraction_static"] == 0.85
    assert make({"mem_fraction_static": None}).engines[0].server_args["mem_fraction_static"] == 0.7  # YAML null


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "0.7", True])
def test_mem_fraction_static_out_of_range(value: object) -> None:
    with pytest.raises(PlanError, match="mem_fraction_static"):
        make({"mem_fraction_static": value})


def test_load_format_dummy_accepted() -> None:
    plan = make({"load_format": "dummy"})
    assert plan.engines[0].server_args["load_format"] == "dummy"
    assert any("dummy" in n for n in plan.notes)


def test_infer_batch_size_warned_and_not_passed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sglang_roll_compat.roll.planner"):
        plan = make({"infer_batch_size": 4})
    assert "infer_batch_size" not in plan.engines[0].server_args
    assert any("ineffective" in w for w in plan.warnings)
    assert any("ineffective" in r.getMessage() for r in caplog.records)


def test_unknown_key_with_did_you_mean() -> None:
    with pytest.raises(PlanError, match=r"'mem_fracion_static' \(did you mean 'mem_fraction_static'\?\)"):
        make({"mem_fracion_static": 0.7})


def test_worker_name_is_a_prefix() -> None:
    plan = make({"worker_name": "rollout"}, [0, 1], 1)
    assert [e.worker_name for e in plan.engines] == ["rollout-0", "rollout-1"]
    assert "worker_name" not in plan.engines[0].server_args
    with pytest.raises(PlanError, match="worker_name"):
        make({"worker_name": ""})


def test_role_names_the_workers() -> None:
    assert make({}, [0], 1, role="reward").engines[0].worker_name == "reward-0"


def test_serverargs_unavailable_skips_only_the_name_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable() -> frozenset[str]:
        raise ModuleNotFoundError("No module named 'sglang.srt'")

    monkeypatch.setattr(serverargs, "field_names", unavailable)
    with caplog.at_level(logging.WARNING, logger="sglang_roll_compat.roll.planner"):
        plan = plan_engines({"some_future_arg": 1}, [0, 1], 1)
    assert not plan.names_checked
    assert any("NOT checked" in w and "ModuleNotFoundError" in w for w in plan.warnings)
    assert any("NOT checked" in r.getMessage() for r in caplog.records)
    assert plan.engines[0].server_args["some_future_arg"] == 1
    assert plan.engines[1].server_args["nccl_port"] == 30101  # planned; the note says it is unverified
    assert any("nccl_port is planned" in n for n in plan.notes)
    # the value checks still run
    with pytest.raises(PlanError, match="mem_fraction_static"):
        plan_engines({"mem_fraction_static": 2}, [0], 1)


# -- tp_size ----------------------------------------------------------------------------------
def test_tp_size_explicit_must_match() -> None:
    assert make({"tp_size": 2}, [0, 1], 2).engines[0].server_args["tp_size"] == 2
    with pytest.raises(PlanError, match=r"tp_size=4 = 4 GPUs per engine, but num_gpus_per_worker=2"):
        make({"tp_size": 4}, [0, 1], 2)
    with pytest.raises(PlanError, match="tp_size must be a positive integer"):
        make({"tp_size": 0}, [0], 1)


def test_roll_tensor_parallel_size_is_consumed_as_tp_size() -> None:
    plan = make({"tensor_parallel_size": 2}, [0, 1, 2, 3], 2)
    args = plan.engines[0].server_args
    assert args["tp_size"] == 2 and "tensor_parallel_size" not in args
    with pytest.raises(PlanError, match="keep one"):
        make({"tensor_parallel_size": 2, "tp_size": 1}, [0, 1], 2)
    with pytest.raises(PlanError, match="num_gpus_per_worker=4"):
        make({"tensor_parallel_size": 2}, [0, 1, 2, 3], 4)


def test_tp_size_derived_with_pp_and_dp() -> None:
    assert make({"pp_size": 2}, list(range(4)), 4).engines[0].server_args["tp_size"] == 2
    assert make({"dp_size": 2}, list(range(4)), 4).engines[0].server_args["tp_size"] == 2
    assert make({"dp_size": 2, "enable_dp_attention": True}, list(range(4)), 4).engines[0].server_args["tp_size"] == 4
    with pytest.raises(PlanError, match="not divisible by pp_size"):
        make({"pp_size": 2}, list(range(3)), 3)
    with pytest.raises(PlanError, match=r"tp_size=2 \* pp_size=2 = 4"):
        make({"pp_size": 2, "tp_size": 2}, list(range(2)), 2)


@pytest.mark.parametrize(
    ("key", "value"),
    [("base_gpu_id", 0), ("base_gpu_id", 3), ("gpu_id_step", 2), ("nnodes", 2), ("node_rank", 1)],
)
def test_per_engine_keys_are_refused(key: str, value: int) -> None:
    with pytest.raises(PlanError, match=f"sets {key}="):
        make({key: value})


def test_harmless_defaults_of_per_engine_keys_are_accepted() -> None:
    args = make({"gpu_id_step": 1, "nnodes": 1, "node_rank": 0}).engines[0].server_args
    assert "gpu_id_step" not in args and "nnodes" not in args and "node_rank" not in args


# -- ports ------------------------------------------------------------------------------------
def _bound_ports(args: dict[str, Any], dist_port: int) -> set[int]:
    """Every port an engine may bind: its own, nccl/torch rendezvous, dist-init and SGLang's ZMQ."""
    ports = {args["port"], dist_port}
    if "nccl_port" in args:
        ports.add(args["nccl_port"])
    if args.get("enable_dp_attention"):
        # SGLang's ZMQ sockets: dist-init + 1 … + 5 + dp_size (0.4-0.5.2), … + 6 + dp_size (later)
        ports.update(range(dist_port + 1, dist_port + 7 + int(args.get("dp_size", 1))))
    return ports


@pytest.mark.parametrize("engines", range(2, 9))
@pytest.mark.parametrize(
    "extra", [{}, {"enable_dp_attention": True, "dp_size": 1}, {"enable_dp_attention": True, "dp_size": 8}]
)
def test_ports_never_collide_on_a_node(engines: int, extra: dict[str, Any]) -> None:
    n = 8 // engines if 8 % engines == 0 and not extra else 1
    mapping = list(range(engines * n))
    plan = make(dict(extra), mapping, n)
    assert len(plan.engines) == engines
    seen: set[int] = set()
    for e in plan.engines:
        ports = _bound_ports(e.server_args, e.dist_init_port)
        assert not ports & seen, f"engine {e.index} reuses {ports & seen}"
        seen |= ports
        if extra:
            assert e.server_args["dist_init_addr"] == f"127.0.0.1:{e.dist_init_port}"
    assert make(dict(extra), mapping, n).as_dict() == plan.as_dict()  # deterministic


def test_no_dist_init_addr_without_dp_attention() -> None:
    plan = make({}, [0, 1], 1)
    assert all("dist_init_addr" not in e.server_args for e in plan.engines)
    assert [e.dist_init_port for e in plan.engines] == [30002, 30102]


def test_release_without_nccl_port_gets_dist_init_addr() -> None:
    plan = make({}, [0, 1], 1, known_fields=KNOWN_046)
    for e in plan.engines:
        assert "nccl_port" not in e.server_args
        assert e.server_args["dist_init_addr"] == f"127.0.0.1:{e.dist_init_port}"


def test_port_base_and_stride() -> None:
    plan = make({}, [0, 1, 2], 1, port_base=40000, port_stride=10)
    assert [e.server_args["port"] for e in plan.engines] == [40000, 40010, 40020]


@pytest.mark.parametrize("key", ["port", "nccl_port", "dist_init_addr"])
def test_explicit_port_with_two_engines_on_a_node_is_refused(key: str) -> None:
    value: object = "127.0.0.1:41000" if key == "dist_init_addr" else 41000
    with pytest.raises(PlanError, match=f"sets {key} for every engine, but node 0 holds 2 engines"):
        make({key: value}, [0, 1], 1)


def test_explicit_ports_honoured_with_one_engine_per_node() -> None:
    plan = make({"port": 41000}, list(range(16)), 8)
    assert [(e.node, e.server_args["port"], e.server_args["nccl_port"]) for e in plan.engines] == [
        (0, 41000, 41001),
        (1, 41000, 41001),
    ]
    plan = make({"nccl_port": 42000, "dist_init_addr": "10.0.0.1:43000"}, [0], 1)
    args = plan.engines[0].server_args
    assert (args["port"], args["nccl_port"], args["dist_init_addr"]) == (30000, 42000, "10.0.0.1:43000")
    assert plan.engines[0].dist_init_port == 43000


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"port": 41000, "nccl_port": 41000}, "both use port 41000"),
        ({"nccl_port": 30002}, "both use port 30002"),
        ({"dist_init_addr": "nohost"}, "host:port"),
        ({"dist_init_addr": "h:99999"}, "no valid TCP port"),
        ({"dist_init_addr": 5}, "host:port"),
        ({"port": "41000"}, "TCP port"),
        ({"port": 65535}, "beyond 65535"),
    ],
)
def test_bad_explicit_ports(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        make(cfg, [0], 1)


def test_ports_beyond_65535_are_refused() -> None:
    with pytest.raises(PlanError, match="beyond 65535"):
        make({}, [0, 1], 1, port_base=65500)


def test_stride_too_small_for_dp_attention() -> None:
    with pytest.raises(PlanError, match="port_stride=100 is too small"):
        make({"enable_dp_attention": True, "dp_size": 100}, [0], 1)


# -- config files -----------------------------------------------------------------------------
ROLL_YAML = """\
hydra:
  run:
    dir: .
  output_subdir: null

exp_name: "planner-test"
seed: 7
num_gpus_per_node: {per_node}
pretrain: /models/tiny
sequence_length: 4096
response_length: 512

actor_train:
  model_args:
    dtype: bf16
  strategy_args:
    strategy_name: megatron_train
    strategy_config:
      tensor_model_parallel_size: 2
  device_mapping: list(range(0,8))
  infer_batch_size: 2

actor_infer:
  model_args:
    dtype: bf16
  generating_args:
    max_new_tokens: ${{response_length}}
    temperature: 0.99
  strategy_args:
    strategy_name: sglang
    strategy_config:
      mem_fraction_static: 0.8
      load_format: dummy
      context_length: ${{sequence_length}}
  num_gpus_per_worker: {per_worker}
  device_mapping: {mapping}
  infer_batch_size: 1

reference:
  strategy_args:
    strategy_name: megatron_infer
  device_mapping: list(range(0,8))
"""


def roll_yaml(tmp_path: Path, per_node: int = 8, per_worker: int = 2, mapping: str = "list(range(0,16))") -> Path:
    path = tmp_path / "rlvr_config.yaml"
    path.write_text(ROLL_YAML.format(per_node=per_node, per_worker=per_worker, mapping=mapping))
    return path


def test_roll_yaml_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sglang_roll_compat.roll.planner"):
        plan = plan_from_config(roll_yaml(tmp_path), known_fields=KNOWN)
    assert len(plan.engines) == 8
    args = plan.engines[4].server_args
    assert args["model_path"] == "/models/tiny"
    assert args["context_length"] == 4096  # ${sequence_length} resolved
    assert args["mem_fraction_static"] == 0.8
    assert (plan.engines[4].node, args["base_gpu_id"]) == (1, 0)
    assert any("actor_infer.infer_batch_size" in w for w in plan.warnings)
    assert any("ineffective" in r.getMessage() for r in caplog.records)
    assert "(roll)" in plan.source
    assert any("model_path from pretrain" in n for n in plan.notes)


def test_roll_yaml_model_args_path_and_node_override(tmp_path: Path) -> None:
    path = roll_yaml(tmp_path, per_node=4, mapping="'[*range(0,4), *range(8,12)]'")  # YAML needs quotes
    text = path.read_text().replace(
        "actor_infer:\n  model_args:\n", "actor_infer:\n  model_args:\n    model_name_or_path: /m/own\n"
    )
    path.write_text(text)
    plan = plan_from_config(path, known_fields=KNOWN)
    assert [e.node for e in plan.engines] == [0, 0, 2, 2]
    assert plan.engines[0].server_args["model_path"] == "/m/own"
    plan = plan_from_config(path, num_gpus_per_node=8, known_fields=KNOWN)
    assert [e.node for e in plan.engines] == [0, 0, 1, 1]
    assert [e.server_args["base_gpu_id"] for e in plan.engines] == [0, 2, 0, 2]


def test_roll_yaml_defaults(tmp_path: Path) -> None:
    data = {
        "actor_infer": {"strategy_args": {"strategy_name": "sglang"}, "device_mapping": "list(range(0,4))"},
    }
    plan = plan_from_config(data, known_fields=KNOWN)
    assert len(plan.engines) == 4  # num_gpus_per_worker defaults to ROLL's 1
    assert any("ROLL's default 1" in n for n in plan.notes)
    assert any("num_gpus_per_node not set" in n for n in plan.notes)
    assert any("model_path not found" in n for n in plan.notes)
    assert plan.engines[0].server_args["mem_fraction_static"] == 0.7


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"strategy_args": {"strategy_name": "vllm"}, "device_mapping": [0]}, "'vllm', not 'sglang'"),
        ({"device_mapping": [0]}, "strategy_args is missing"),
        (
            {"strategy_args": {"strategy_name": "sglang", "num_gpus_per_worker": 2}, "device_mapping": [0, 1]},
            "belongs under actor_infer",
        ),
        (
            {"strategy_args": {"strategy_name": "sglang", "strategy_confg": {}}, "device_mapping": [0]},
            "did you mean 'strategy_config'",
        ),
        ({"strategy_args": {"strategy_name": "sglang"}}, "device_mapping is missing"),
        ({"strategy_args": {"strategy_name": "sglang", "strategy_config": [1]}, "device_mapping": [0]}, "mapping"),
        ("sglang", "actor_infer must be a mapping"),
    ],
)
def test_roll_shape_errors(section: object, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        plan_from_config({"actor_infer": section}, known_fields=KNOWN)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("${oc.env:HOME}", "whole-value references"),
        ("x-${pretrain}", "whole-value references"),
        ("${nowhere}", "'nowhere' is not in the config"),
        ("${loop_a}", "nest deeper"),
    ],
)
def test_interpolations(value: str, match: str) -> None:
    data = {
        "loop_a": "${loop_b}",
        "loop_b": "${loop_a}",
        "actor_infer": {
            "strategy_args": {"strategy_name": "sglang", "strategy_config": {"context_length": value}},
            "device_mapping": [0],
        },
    }
    with pytest.raises(PlanError, match=match):
        plan_from_config(data, known_fields=KNOWN)


def test_interpolated_device_mapping_and_sizes() -> None:
    data = {
        "gpus": "list(range(0,4))",
        "per_worker": 2,
        "nodes": {"size": 4},
        "num_gpus_per_node": "${nodes.size}",
        "actor_infer": {
            "strategy_args": {"strategy_name": "sglang"},
            "device_mapping": "${gpus}",
            "num_gpus_per_worker": "${per_worker}",
        },
    }
    plan = plan_from_config(data, known_fields=KNOWN)
    assert [e.gpu_ids for e in plan.engines] == [(0, 1), (2, 3)]
    assert plan.num_gpus_per_node == 4


def test_plain_json_and_yaml(tmp_path: Path) -> None:
    doc = {
        "strategy_config": {"mem_fraction_static": 0.6},
        "device_mapping": "list(range(0,4))",
        "num_gpus_per_worker": 2,
        "num_gpus_per_node": 4,
        "infer_batch_size": 8,
    }
    (tmp_path / "p.json").write_text(json.dumps(doc))
    (tmp_path / "p.yml").write_text(json.dumps(doc))  # JSON is YAML
    for name in ("p.json", "p.yml"):
        plan = plan_from_config(tmp_path / name, known_fields=KNOWN)
        assert [e.server_args["base_gpu_id"] for e in plan.engines] == [0, 2]
        assert "(plain)" in plan.source
        assert any("infer_batch_size" in w for w in plan.warnings)
        assert "model_path" not in plan.engines[0].server_args


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"device_mapping": [0], "num_gpu_per_worker": 1}, "did you mean 'num_gpus_per_worker'"),
        ({"something": 1}, "neither"),
        ({"strategy_config": 3, "device_mapping": [0]}, "strategy_config must be a mapping"),
    ],
)
def test_plain_shape_errors(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        plan_from_config(doc, known_fields=KNOWN)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.yaml", "a: [1, 2\n", "not valid YAML"),
        ("bad.json", "{", "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "mapping at the top level"),
        ("empty.yaml", "", "mapping at the top level"),
        ("tagged.yaml", "x: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PlanError, match=match):
        plan_from_config(path, known_fields=KNOWN)


def test_missing_file_and_bad_object(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read config"):
        plan_from_config(tmp_path / "nope.yaml", known_fields=KNOWN)
    with pytest.raises(PlanError, match="path or mapping"):
        plan_from_config(42, known_fields=KNOWN)  # type: ignore[arg-type]


def test_yaml_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    (tmp_path / "c.yaml").write_text("device_mapping: [0]\n")
    with pytest.raises(PlanError, match="pip install pyyaml"):
        plan_from_config(tmp_path / "c.yaml", known_fields=KNOWN)
    (tmp_path / "c.json").write_text('{"device_mapping": [0]}')
    assert len(plan_from_config(tmp_path / "c.json", known_fields=KNOWN).engines) == 1


def test_render_shows_the_table_and_the_check_state() -> None:
    text = planner.render(make({"load_format": "dummy"}, list(range(16)), 4))
    assert "worker_name" in text and "actor_infer-3" in text and "30100" in text
    assert "checked against ServerArgs: yes" in text


# -- CLI --------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_isolated([sys.executable, "-P", "-m", "sglang_roll_compat", "plan", *args], env=child_env(), timeout=120)


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_cli_plan_json_and_errors(tmp_path: Path) -> None:
    result = _cli(str(roll_yaml(tmp_path, mapping="list(range(0,8))")), "--json", "--num-gpus-per-node", "4")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["num_engines"] == 4 and data["num_gpus_per_node"] == 4
    assert [e["server_args"]["base_gpu_id"] for e in data["engines"]] == [0, 2, 0, 2]
    assert [e["node"] for e in data["engines"]] == [0, 0, 1, 1]

    bad = tmp_path / "bad.yaml"
    bad.write_text("actor_infer:\n  strategy_args: {strategy_name: sglang}\n  device_mapping: __import__('os')\n")
    result = _cli(str(bad))
    assert result.returncode == 1
    assert "error:" in result.stderr and "not allowed" in result.stderr and not result.stdout


# -- against the real ServerArgs --------------------------------------------------------------
@pytest.mark.sglang
def test_real_serverargs_fields() -> None:
    fields = serverargs.field_names()
    plan = plan_engines({"mem_fraction_static": 0.8, "load_format": "dummy"}, "list(range(0,4))", 2)
    assert plan.names_checked and not plan.warnings
    for e in plan.engines:
        assert set(e.server_args) <= fields
        assert ("nccl_port" in e.server_args) == ("nccl_port" in fields)
        assert ("dist_init_addr" in e.server_args) == ("nccl_port" not in fields)
    with pytest.raises(PlanError, match="did you mean 'mem_fraction_static'"):
        plan_engines({"mem_fraction_statc": 0.8}, [0], 1)
