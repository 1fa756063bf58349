"""Vertical decisions and TensorFusion's condition messages."""

from __future__ import annotations

from tfsched.autoscale.estimators import Amounts, Estimates, ResourceAmounts
from tfsched.autoscale.vertical import LIMIT_CEILING, Action, decide_vertical, proportional_limit, step_capped
from tfsched.clustermodel.autoscaling_config import AutoSetResources, Resources

GI = 2**30


def estimates(tflops: tuple[float, float, float], vram: tuple[float, float, float]) -> Estimates:
    """(lower, target, upper) in TFLOPS and bytes."""
    milli = [round(v * 1000) for v in tflops]
    return Estimates(
        target=Amounts(milli[1], int(vram[1])),
        lower_bound=Amounts(milli[0], int(vram[0])),
        upper_bound=Amounts(milli[2], int(vram[2])),
    )


def current(tflops: tuple[str, str], vram: tuple[str, str]) -> ResourceAmounts:
    model = Resources.model_validate(
        {"requests": {"tflops": tflops[0], "vram": vram[0]}, "limits": {"tflops": tflops[1], "vram": vram[1]}}
    )
    return ResourceAmounts.from_model(model)


ALL = AutoSetResources(enable=True, target_resource="all")


def test_scale_up_message_is_tensorfusions() -> None:
    result = decide_vertical(
        ALL, estimates((100, 120, 150), (100 * GI, 120 * GI, 150 * GI)), current(("20", "40"), ("20Gi", "40Gi"))
    )
    assert result.message == (
        "TFLOPS scaled up due to (20) below lower bound (100), VRAM scaled up due to (20Gi) below lower bound (100Gi)"
    )
    assert result.proposals == {"tflops": (120_000, 240_000), "vram": (120 * GI, 240 * GI)}
    assert result.applies


def test_scale_down_message() -> None:
    result = decide_vertical(
        ALL, estimates((5, 10, 12.5), (GI, 2 * GI, 3 * GI)), current(("100", "100"), ("8Gi", "8Gi"))
    )
    assert result.message == (
        "TFLOPS scaled down due to (100) above upper bound (12500m), "
        "VRAM scaled down due to (8Gi) above upper bound (3Gi)"
    )
    assert result.proposals == {"tflops": (10_000, 10_000), "vram": (2 * GI, 2 * GI)}


def test_inside_the_band_no_change() -> None:
    result = decide_vertical(ALL, estimates((5, 10, 20), (GI, 2 * GI, 4 * GI)), current(("10", "20"), ("2Gi", "4Gi")))
    assert result.proposals == {}
    assert result.message == ""
    assert [d.action for d in result.decisions] == [Action.NONE, Action.NONE]
    # Bounds are inclusive: a request equal to a bound stays.
    at_bounds = decide_vertical(ALL, estimates((5, 10, 20), (GI, 2 * GI, 4 * GI)), current(("5", "5"), ("4Gi", "4Gi")))
    assert at_bounds.proposals == {}


def test_limit_keeps_its_ratio_rounded_down() -> None:
    assert proportional_limit(30, 20, 7, "vram") == 10  # 30 · 7 / 20 = 10.5
    # The ratio kept past what any annotation may hold stops at the ceiling (1 PiB; 1e6 TFLOPS).
    assert proportional_limit(42 * 10**9, 1, 200 * 2**20, "vram") == LIMIT_CEILING["vram"] == 2**50
    assert proportional_limit(10**9, 1, 10**6, "tflops") == LIMIT_CEILING["tflops"] == 10**9
    result = decide_vertical(ALL, estimates((50, 77.777, 90), (GI, GI, GI)), current(("20", "30"), ("1Gi", "1Gi")))
    assert result.proposals["tflops"] == (77_777, 116_665)


def test_zero_request_or_limit_skips_the_resource() -> None:
    result = decide_vertical(ALL, estimates((50, 60, 90), (GI, 2 * GI, 3 * GI)), current(("0", "0"), ("8Gi", "0")))
    assert [d.action for d in result.decisions] == [Action.ZERO, Action.ZERO]
    assert result.proposals == {}


def test_no_history_skips() -> None:
    empty = Estimates(Amounts(), Amounts(), Amounts(), has_tflops_history=False, has_vram_history=False)
    result = decide_vertical(ALL, empty, current(("20", "40"), ("2Gi", "4Gi")))
    assert [d.action for d in result.decisions] == [Action.NO_HISTORY, Action.NO_HISTORY]


def test_target_resource_restricts_and_empty_means_recommend_only() -> None:
    est = estimates((100, 120, 150), (100 * GI, 120 * GI, 150 * GI))
    cur = current(("20", "40"), ("20Gi", "40Gi"))
    tflops_only = decide_vertical(AutoSetResources(enable=True, target_resource="tflops"), est, cur)
    assert set(tflops_only.proposals) == {"tflops"}
    assert tflops_only.decision("vram").action == Action.NOT_TARGETED
    assert tflops_only.message == "TFLOPS scaled up due to (20) below lower bound (100)"
    vram_only = decide_vertical(AutoSetResources(enable=True, target_resource="vram"), est, cur)
    assert set(vram_only.proposals) == {"vram"}
    assert vram_only.applies
    recommend_only = decide_vertical(AutoSetResources(enable=True, target_resource=""), est, cur)
    assert set(recommend_only.proposals) == {"tflops", "vram"}
    assert not recommend_only.applies
    disabled = decide_vertical(AutoSetResources(enable=False, target_resource="all"), est, cur)
    assert not disabled.applies


def test_max_step_fraction_caps_one_change() -> None:
    config = AutoSetResources(enable=True, target_resource="all", max_step_fraction=0.5)
    up = decide_vertical(
        config, estimates((100, 120, 150), (100 * GI, 120 * GI, 150 * GI)), current(("20", "40"), ("20Gi", "20Gi"))
    )
    assert up.proposals == {"tflops": (30_000, 60_000), "vram": (30 * GI, 30 * GI)}
    down = decide_vertical(config, estimates((1, 2, 3), (GI, GI, GI)), current(("100", "100"), ("8Gi", "8Gi")))
    assert down.proposals == {"tflops": (50_000, 50_000), "vram": (4 * GI, 4 * GI)}
    assert step_capped(100, 10, None) == 10
    assert step_capped(100, 10, 2.0) == 10
    assert step_capped(100, 180, 0.5) == 150
