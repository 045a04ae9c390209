"""The energy and cost model: hand-computed figures, the request log, the CLI and the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from blackroad.config import Settings
from blackroad.errors import BlackRoadError
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord
from blackroad.usage.cost import (
    DEFAULT_CLOUD_PRICES,
    PROFILES,
    CloudPrice,
    CostModel,
    NodeUsage,
    PowerProfile,
    cost_model,
    cost_report,
    detect_profile,
    format_tokens,
    load_cloud_prices,
)
from tests.conftest import SMOLLM2
from tests.support.server import blackroad

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# A Pi 5 at 3 W idle and 8 W busy, 120 of hardware over 3 years, 0.30 per kWh.
PI = CostModel(PowerProfile("pi5", 3.0, 8.0, 120.0), 0.30, 3.0, "USD")
# Write-off per day: 120 / (3 × 365.25) = 0.109514; idle all day: 3 W × 24 h =
# 0.072 kWh = 0.0216; so a day serving nothing costs 0.131114.
FIXED_PER_DAY = 0.131114
# One day measured: busy one hour, 270k tokens in and 90k out (100 tokens/s).
DAY = NodeUsage("pi", 50, 270_000, 90_000, 3600.0, NOW - timedelta(days=1))


def test_a_day_with_an_hour_busy_is_priced_by_hand() -> None:
    result = cost_report(PI, [DAY], [], NOW - timedelta(days=1), NOW)
    node = result.nodes[0]
    # 8 W × 1 h = 0.008 kWh busy, 3 W × 23 h = 0.069 kWh idle.
    assert node.energy_kwh == pytest.approx(0.077)
    assert node.energy_cost == pytest.approx(0.0231)
    assert node.amortisation == pytest.approx(0.109514, rel=1e-5)
    assert node.total_cost == pytest.approx(0.132614, rel=1e-5)
    assert node.utilisation == pytest.approx(1 / 24)
    assert node.tokens == 360_000
    assert node.tokens_per_day == pytest.approx(360_000)
    assert node.cost_per_million == pytest.approx(0.132614 / 0.36, rel=1e-5)
    assert node.capacity_tokens_per_day == pytest.approx(8_640_000)
    # Busy all day: 0.109514 + 8 W × 24 h × 0.30 = 0.167114, over 8.64M tokens.
    assert node.cost_per_million_at_capacity == pytest.approx(0.167114 / 8.64, rel=1e-5)
    assert result.total.total_cost == pytest.approx(node.total_cost)
    assert PI.fixed_per_day == pytest.approx(FIXED_PER_DAY, rel=1e-5)


def test_a_node_younger_than_the_window_is_measured_from_its_first_record() -> None:
    result = cost_report(PI, [DAY], [], NOW - timedelta(days=30), NOW)
    assert result.nodes[0].days == pytest.approx(1.0)
    assert result.nodes[0].tokens_per_day == pytest.approx(360_000)


def test_break_even_blends_cloud_prices_at_the_measured_mix() -> None:
    prices = [
        CloudPrice("mini", 0.15, 0.60),
        CloudPrice("premium", 0.80, 4.00),
        CloudPrice("cheap", 0.01, 0.04),
        CloudPrice("free", 0.001, 0.004),
    ]
    mini, premium, cheap, free = cost_report(PI, [DAY], prices, NOW - timedelta(days=1), NOW).cloud
    # 3/4 of the tokens are input: 0.75 × 0.15 + 0.25 × 0.60 = 0.2625 per 1M.
    assert mini.blended_price == pytest.approx(0.2625)
    assert mini.cloud_cost == pytest.approx(0.27 * 0.15 + 0.09 * 0.60)
    # Extra energy per token: 5 W / 100 tokens/s × 0.30 / 3.6e6 = 4.1667e-9.
    # Break-even: 0.131114 / (0.2625e-6 − 4.1667e-9) = 507,538 tokens/day.
    assert mini.break_even_tokens_per_day == pytest.approx(507_538, rel=1e-5)
    assert mini.standing == "below"
    # 1.6 per 1M: 0.131114 / (1.6e-6 − 4.1667e-9) = 82,160, under 360k measured.
    assert premium.break_even_tokens_per_day == pytest.approx(82_160, rel=1e-5)
    assert premium.standing == "pays"
    # 0.0175 per 1M: 9.83M tokens/day, more than the 8.64M this node can serve.
    assert cheap.break_even_tokens_per_day == pytest.approx(9_833_552, rel=1e-5)
    assert cheap.standing == "beyond capacity"
    # 0.00175 per 1M is less than the energy of a token: never.
    assert free.break_even_tokens_per_day is None
    assert free.standing == "never"


def test_two_identical_nodes_need_twice_the_volume_to_break_even() -> None:
    other = NodeUsage("pi-2", 50, 270_000, 90_000, 3600.0, NOW - timedelta(days=1))
    price = [CloudPrice("mini", 0.15, 0.60)]
    both = cost_report(PI, [DAY, other], price, NOW - timedelta(days=1), NOW)
    assert both.total.tokens_per_day == pytest.approx(720_000)
    assert both.total.capacity_tokens_per_day == pytest.approx(17_280_000)
    assert both.cloud[0].break_even_tokens_per_day == pytest.approx(2 * 507_538, rel=1e-5)


def test_nothing_served_has_costs_but_no_break_even() -> None:
    idle = NodeUsage("pi", 0, 0, 0, 0.0, NOW - timedelta(days=1))
    result = cost_report(PI, [idle], DEFAULT_CLOUD_PRICES, NOW - timedelta(days=1), NOW)
    assert result.total.total_cost == pytest.approx(FIXED_PER_DAY, rel=1e-5)
    assert result.total.cost_per_million is None
    assert {c.standing for c in result.cloud} == {"unmeasured"}
    assert "Nothing served" in result.verdict


def test_token_counts_read_with_three_digits_and_a_unit() -> None:
    assert [format_tokens(n) for n in (950, 582_729, 999_999, 1_600_000, 2e9)] == [
        "950", "583k", "1M", "1.6M", "2B",
    ]  # fmt: skip


def test_a_price_file_replaces_the_built_in_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"rival": {"input": 1, "output": 2.5}}))
    assert load_cloud_prices(path) == (CloudPrice("rival", 1.0, 2.5),)
    assert load_cloud_prices(None) == DEFAULT_CLOUD_PRICES
    for bad in ("[]", "{}", '{"rival": {"input": 1}}', '{"rival": {"input": -1, "output": 1}}'):
        path.write_text(bad)
        with pytest.raises(BlackRoadError):
            load_cloud_prices(path)
    with pytest.raises(BlackRoadError, match="cannot read"):
        load_cloud_prices(tmp_path / "missing.json")


def test_the_profile_is_detected_from_the_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert detect_profile(model) == "pi5"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert detect_profile(model) == "minipc"
    assert detect_profile(tmp_path / "absent") == "minipc"


def test_settings_override_the_profile(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    settings = Settings.from_env(
        {"BLACKROAD_WATTS_BUSY": "9.5", "BLACKROAD_ELECTRICITY_PRICE": "0.2"}
    )
    assert (settings.watts_busy, settings.electricity_price) == (9.5, 0.2)
    chosen = cost_model(settings, model)
    assert chosen.profile == PowerProfile("pi5", PROFILES["pi5"].watts_idle, 9.5, 120.0)
    assert chosen.electricity_price == 0.2
    assert cost_model(Settings(power_profile="gpu"), model).profile == PROFILES["gpu"]
    with pytest.raises(BlackRoadError, match="power_profile"):
        cost_model(Settings(power_profile="mainframe"), model)
    with pytest.raises(BlackRoadError, match="watts_idle"):
        cost_model(Settings(power_profile="pi5", watts_idle=20.0), model)


def record(
    db: Database, at: datetime, seconds: float, node: str | None = "a", model: str | None = SMOLLM2
) -> None:
    db.record_request(
        RequestRecord(
            created_at=at, method="POST", path="/v1/chat/completions", model=model, node=node,
            status=200, prompt_tokens=30, completion_tokens=10, duration_ms=seconds * 1000,
        )
    )  # fmt: skip


def test_busy_time_is_the_union_of_overlapping_requests(tmp_path: Path) -> None:
    db = Database(tmp_path / "blackroad.db")
    t0 = NOW - timedelta(hours=1)
    record(db, NOW - timedelta(days=40), 1, model=None)  # the node's first record
    record(db, NOW - timedelta(days=3), 50)  # before the window
    record(db, t0, 10)
    record(db, t0 + timedelta(seconds=5), 10)  # overlaps: [0, 15]
    record(db, t0 + timedelta(seconds=6), 2)  # inside it
    record(db, t0 + timedelta(seconds=100), 5)
    record(db, t0 + timedelta(seconds=200), 3, node=None)  # before nodes were named
    record(db, t0 + timedelta(seconds=1), 4, node="b")
    rows = {row["node"]: row for row in db.usage_by_node(NOW - timedelta(days=1), "a")}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["busy_seconds"] == pytest.approx(15 + 5 + 3)
    assert rows["a"]["requests"] == 5
    assert rows["a"]["prompt_tokens"] == 150
    assert rows["a"]["first_at"] == NOW - timedelta(days=40)
    assert rows["b"]["busy_seconds"] == pytest.approx(4)
    assert rows["b"]["completion_tokens"] == 10


def test_the_cost_command_on_a_recorded_database(tmp_path: Path) -> None:
    db = Database(tmp_path / "blackroad.db")
    start = datetime.now(UTC) - timedelta(days=2)
    record(db, start, 0.001, node="pi", model=None)
    for i in range(100):  # 400 tokens in 36 s each: 11.1 tokens/s, 960k a day at most
        db.record_request(
            RequestRecord(
                created_at=start + timedelta(minutes=10 * i + 1), method="POST",
                path="/v1/chat/completions", model=SMOLLM2, node="pi", status=200,
                prompt_tokens=300, completion_tokens=100, duration_ms=36_000.0,
            )
        )  # fmt: skip
    db.close()
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"rival": {"input": 0.15, "output": 0.60}}))
    result = blackroad(
        "cost", home=tmp_path, power_profile="pi5", watts_busy="8", cloud_prices=str(prices)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "Power profile pi5: 3 W idle, 8 W busy" in out
    assert "pi 2.0 100 40k 2.1%" in out  # node, days, requests, tokens, busy share
    # Busy all day: (0.109514 + 0.0576) / 960k tokens × 1M = 0.174 per 1M.
    assert "0.174" in out
    assert "20k 960k" in out  # tokens a day, capacity a day
    # Blended 0.2625 per 1M; extra energy 5 W / 11.1 tokens/s: 3.75e-8 a token;
    # break-even 0.131114 / (2.625e-7 − 3.75e-8) = 583k tokens/day.
    assert "rival 0.15/0.60 0.263" in out
    assert "583k below break-even" in out
    assert "gpt-4o-mini" not in out
    assert "It pays against 0 of 1 cloud models." in out


def test_a_bad_price_file_is_a_clear_error(tmp_path: Path) -> None:
    result = blackroad("cost", home=tmp_path, cloud_prices=str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert "cannot read cloud prices" in result.stdout


def test_the_api_prices_what_the_server_served(client: openai.OpenAI, http: httpx.Client) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.usage is not None
    response = http.get("/api/usage/cost", params={"days": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    total = body["total"]
    assert total["tokens"] >= reply.usage.total_tokens > 0
    assert total["tokens"] == total["prompt_tokens"] + total["completion_tokens"]
    assert total["busy_seconds"] > 0
    assert total["total_cost"] == pytest.approx(total["energy_cost"] + total["amortisation"])
    assert total["cost_per_million"] == pytest.approx(
        total["total_cost"] / total["tokens"] * 1_000_000
    )
    assert 0 < total["cost_per_million_at_capacity"] <= total["cost_per_million"]
    assert body["profile"]["name"] in PROFILES
    assert body["rule_of_thumb_tokens_per_day"] == 2_000_000
    assert [c["model"] for c in body["cloud"]] == [p.model for p in DEFAULT_CLOUD_PRICES]
    for cloud in body["cloud"]:
        expected = (
            total["prompt_tokens"] * cloud["input_price"]
            + total["completion_tokens"] * cloud["output_price"]
        ) / 1_000_000
        assert cloud["cloud_cost"] == pytest.approx(expected)
        assert cloud["standing"] != "unmeasured"
        assert cloud["break_even_tokens_per_day"] is not None or cloud["standing"] == "never"
    assert body["verdict"].startswith("Measured over")
    assert http.get("/api/usage/cost", params={"days": 0}).status_code == 400
