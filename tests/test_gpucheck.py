"""The GPU check script cannot rot: ``--smoke`` runs every part on the CPU at tiny scale."""

from __future__ import annotations

import json

import pytest
from gpucheck import main

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    assert main(["--smoke", "--out", str(out)]) == 0
    return {
        p: json.loads((out / f"{p}.json").read_text()) for p in ("correctness", "speed", "scale")
    }


def test_every_part_writes_its_json_with_the_environment(smoke):
    for part, doc in smoke.items():
        assert doc["part"] == part and doc["smoke"] is True
        env = doc["environment"]
        assert env["device"] == "cpu" and env["torch"] and "cuda" in env
        assert doc["settings"]["smoke"] is True


def test_correctness_compares_every_case(smoke):
    doc = smoke["correctness"]
    cases = doc["bundle_stats_device_vs_cpu"]
    assert set(cases) == {"distinct", "ten_bundles", "collapsed", "signed_zero", "activations"}
    assert doc["bundle_stats_all_equal"] is True  # CPU against CPU must agree exactly
    assert cases["ten_bundles"]["reference"]["num_bundles_cpu"] == 10
    assert cases["collapsed"]["reference"]["num_bundles_cpu"] == 1
    assert cases["signed_zero"]["raw"]["num_bundles_cpu"] == 2  # -0.0 == 0.0
    meas = doc["measure_device_vs_cpu"]
    assert meas["layers"] == 4 and meas["all_equal"] is True
    det = doc["epoch_determinism"]
    assert det["default"]["weights_equal"] is True and det["default"]["rows_equal"] is True
    strict = det["deterministic_algorithms"]
    assert strict["weights_equal"] is True and isinstance(strict["nondeterministic_ops"], list)


def test_speed_has_every_configuration(smoke):
    configs = smoke["speed"]["configs"]
    assert [(c["amp"], c["channels_last"]) for c in configs] == [
        ("fp32", False),
        ("fp32", True),
        ("bf16", False),
        ("bf16", True),
    ]
    for c in configs:
        assert c["bare"]["images_per_s"] > 0 and c["train"]["images_per_s"] > 0
        assert c["ratio_train_vs_bare"] > 0
        assert 0 < c["train"]["check_share_of_full_epoch"] < 1
    assert smoke["speed"]["input_pipeline"]["device_over_cpu"] > 0


def test_scale_trains_lesions_and_autotunes(smoke):
    doc = smoke["scale"]
    rec = doc["datasets"]["synthetic"]
    assert rec["train"]["epochs"] == 1 and rec["train"]["test_acc"] is not None
    les = rec["lesion"]
    assert les["blocks"] == 4 and les["max_k"] >= 1
    assert les["reference_num_flagged"] == len(les["reference_flagged_blocks"])
    assert "non-conflicting" in les["reference_removable_within_tolerance"]
    at = doc["autotune_plain"]
    assert at["blocks_start"] == 4 and at["final_test_acc"] is not None
    assert isinstance(at["trigger_fired"], bool)
    assert doc["ddp"]["ran"] is False and "CUDA device" in doc["ddp"]["reason"]


def test_scale_runs_are_sized_from_the_measured_step_time(tmp_path):
    from gpucheck import Settings

    s = Settings(out=tmp_path, per_step_s=0.1)
    assert s.fit_limit(seconds=10_000, epochs=1) is None  # 938 steps fit: the whole split
    limit = s.fit_limit(seconds=60, epochs=2)  # 60 s / (1.2 * 2 * 0.1 s) = 250 steps
    assert limit == 250 * 64
    assert s.fit_limit(seconds=0.1, epochs=1) == 10 * 64  # never fewer than 10 batches
    assert Settings(out=tmp_path).fit_limit(60, 1) is None  # nothing measured: whole split


def test_unknown_part_is_a_clear_error(capsys):
    assert main(["--smoke", "--parts", "speed,warp"]) == 2
    assert "unknown part(s) warp" in capsys.readouterr().err


def test_a_failing_part_records_its_error_and_the_next_part_runs(tmp_path, monkeypatch):
    from gpucheck import correctness

    def boom(s, device):
        raise RuntimeError("simulated CUDA failure")

    monkeypatch.setattr(correctness, "run", boom)
    speed_ran = []
    from gpucheck import speed

    monkeypatch.setattr(speed, "run", lambda s, device: speed_ran.append(1) or {})
    assert main(["--smoke", "--parts", "correctness,speed", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "correctness.json").read_text())
    assert doc["error"] == "RuntimeError: simulated CUDA failure"
    assert doc["environment"]["device"] == "cpu"
    assert speed_ran == [1]
