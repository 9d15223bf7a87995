"""Precision and device settings: resolved and recorded per run, never merged across precisions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mtlbench.backend import at_least_float32, autocast, resolve_precision
from mtlbench.config import LEGACY_VALUES, RunConfig, build_config
from mtlbench.errors import UserError
from mtlbench.model import ModelSpec, MultiTaskNet
from mtlbench.report.load import load_protocols
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import build_method, build_optimizer, resolve_runtime, train_run, training_step
from tests.configs import cpu_smoke_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu() -> None:
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("tf32", CUDA) == "tf32"


def test_tf32_off_cuda_and_unknown_precisions_are_user_errors() -> None:
    with pytest.raises(UserError, match="tf32 is a CUDA"):
        resolve_precision("tf32", CPU)
    with pytest.raises(UserError, match="unknown --precision 'fp8'"):
        resolve_precision("fp8", CPU)
    with pytest.raises(UserError, match="unknown --precision"):
        build_config("smoke", [({"precision": "half"}, "command line")])


def test_resolved_config_never_stores_auto() -> None:
    config = resolve_runtime(replace(build_config("smoke"), device="cpu"))
    assert (config.precision, config.grad_engine, config.device) == ("fp32", "loop", "cpu")


def test_at_least_float32_upcasts_only_lower_precision() -> None:
    assert at_least_float32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_float32(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
    assert at_least_float32(torch.ones(2)).dtype == torch.float32


def test_bf16_step_runs_the_model_in_bf16_and_gives_float32_losses() -> None:
    config = replace(build_config("smoke"), device="cpu", precision="bf16", grad_engine="loop")
    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(len(TASK_NAMES))).train()
    x = torch.randn(4, 1, 32, 32)
    y = (torch.rand(4, len(TASK_NAMES)) < 0.3).float()
    with autocast("bf16", CPU):
        _, raw = model(x)
    assert raw.dtype == torch.bfloat16
    for name in ("ew", "mgda-ub"):  # mgda-ub: its Jacobian is taken on bf16 features
        method = build_method(replace(config, method=name), TASK_NAMES)
        optimizer = build_optimizer(config, model, method)
        rec = training_step(model, method, optimizer, x, y, config, 0, 0, CPU)
        assert rec.losses.dtype == rec.logits.dtype == torch.float32
        assert torch.isfinite(rec.losses).all() and torch.isfinite(rec.weights).all()
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_precision_and_compile_are_in_the_hash_and_legacy_values_keep_old_hashes() -> None:
    base = cpu_smoke_config()
    # pinned: the identity of this cell since results schema 4 (resolved hyperparameters and the
    # method's version in the hash); a change here silently orphans every stored result. Changed on
    # purpose once since (was 082c6d26d7083bbf): cxr14-synth's test split got its own size
    # (synth_test_images, hashed for this dataset) and the smoke preset's synth_images went 400 → 320
    assert base.config_hash() == "180ad753955ce07f"
    # a run stored before precision and compile existed is re-identified with their legacy values
    stored = {k: v for k, v in json.loads(base.to_json()).items() if k not in ("precision", "compile")}
    assert (
        RunConfig(**{**LEGACY_VALUES, **{k: v for k, v in stored.items() if k != "method_version"}}).config_hash()
        == base.config_hash()
    )
    assert (
        len(
            {
                base.config_hash(),
                replace(base, precision="bf16").config_hash(),
                replace(base, compile=True).config_hash(),
            }
        )
        == 3
    )
    assert "precision" in json.loads(base.to_json())


def test_fp32_and_bf16_runs_store_their_precision_and_are_not_merged_in_reports(tmp_path, toy_bundle) -> None:
    config = replace(build_config("smoke"), device="cpu", epochs=1, batch_size=32, grad_engine="loop")
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        for precision in ("fp32", "bf16"):
            out = train_run(replace(config, precision=precision), toy_bundle, store, {})
            assert out.status == "complete", out.detail
        stored = [json.loads(r["config_json"])["precision"] for r in store.query("SELECT config_json FROM runs")]
    assert stored == ["fp32", "bf16"]
    protocols = load_protocols(path)
    assert sorted(p.config["precision"] for p in protocols) == ["bf16", "fp32"]
    assert all(len(p.runs) == 1 for p in protocols)


def test_runs_stored_before_precision_existed_count_as_fp32(tmp_path, toy_bundle) -> None:
    config = replace(build_config("smoke"), device="cpu", epochs=1, batch_size=32, grad_engine="loop")
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        train_run(replace(config, precision="fp32"), toy_bundle, store, {})
        train_run(replace(config, precision="fp32", method="deepchest"), toy_bundle, store, {})
        old = {
            k: v
            for k, v in json.loads(store.query("SELECT config_json FROM runs")[0][0]).items()
            if k not in ("precision", "compile")
        }
        store.conn.execute("UPDATE runs SET config_json=? WHERE run_id=1", (json.dumps(old),))
        store.conn.commit()
    (protocol,) = load_protocols(path)
    assert protocol.config["precision"] == "fp32" and len(protocol.runs) == 2


def test_compiled_run_completes_and_records_compile(tmp_path, toy_bundle) -> None:
    """--compile (loss-weighting methods): the model is compiled in place and the run says so."""
    config = replace(build_config("smoke"), device="cpu", epochs=1, batch_size=32, method="deepchest", compile=True)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        out = train_run(config, toy_bundle, store, {})
        assert out.status == "complete", out.detail
        assert json.loads(store.query("SELECT config_json FROM runs")[0][0])["compile"] is True
    assert 0.0 <= out.test_auroc <= 1.0


def test_deterministic_switch_is_set_per_run_recorded_and_not_part_of_the_cell() -> None:
    from mtlbench import backend

    cpu = torch.device("cpu")
    try:
        assert backend.configure(cpu, "fp32", deterministic=True)["deterministic"] is True
        assert torch.are_deterministic_algorithms_enabled()
        assert backend.configure(cpu, "fp32")["deterministic"] is False  # the next run's own setting
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    config = build_config("smoke")
    assert replace(config, deterministic=True).config_hash() == config.config_hash()
