"""The Models app: the bundled catalog with its metadata, a pull with a progress bar, load and
unload, delete, placement; a user sees the catalog only.

The desk's server here is this module's own, with a directory registry holding
``team/helper:v1`` (pushed there by a publisher server, as the Ollama pull tests do).
Screenshots of the app, light and dark, are taken (see test_desktop.SCREENSHOTS).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.conftest import GEMMA3, MINILM, SMOLLM2
from tests.support.server import Server, running_server
from tests.web.conftest import ADMIN, USER, Desk, desk_server_in, open_app
from tests.web.test_desktop import SCREENSHOTS, _serious_violations
from tests.web.test_knowledge_app import csrf, progress_values, watch_progress

PULLED = "team/helper:v1"
GGUF_BYTES = 98362432  # smollm2's file, the pulled model's weights


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models-mirror")
    with running_server(tmp_path_factory.mktemp("models-publisher"), registry=str(root)) as pub:
        client = ollama.Client(host=pub.url)
        client.create(model=PULLED, from_=SMOLLM2, system="You help the team.")
        assert [p.status for p in client.push(PULLED, stream=True)][-1] == "success"
    return root


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory: pytest.TempPathFactory, registry_dir: Path) -> Iterator[Server]:
    """Overrides the session's desk server for this module: this one has a registry."""
    with desk_server_in(tmp_path_factory.mktemp("models-desk"), registry=str(registry_dir)) as s:
        yield s


def models(page: Page) -> Locator:
    open_app(page, "Models")
    catalog = page.get_by_role("table", name="Models on this node")
    expect(catalog.locator(f"tr[data-model='{SMOLLM2}']")).to_be_visible()
    return catalog


def cells(row: Locator) -> list[str]:
    return [text.strip() for text in row.locator("th, td").all_inner_texts()]


def test_the_catalog_shows_each_bundled_models_metadata(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    catalog = models(page)
    smollm2 = cells(catalog.locator(f"tr[data-model='{SMOLLM2}']"))
    assert smollm2[:7] == [
        SMOLLM2, "llama", "134.52M", "Q4_1", "8,192", "completion, embedding", "98.4 MB",
    ]  # fmt: skip
    gemma = cells(catalog.locator(f"tr[data-model='{GEMMA3}']"))
    assert gemma[1:4] == ["gemma3", "268.10M", "Q4_K_M"]
    minilm = cells(catalog.locator(f"tr[data-model='{MINILM}']"))
    assert minilm[1] == "bert" and minilm[5] == "embedding"  # embedding-only: no completion
    shown = page.request.post(
        "/api/show", data={"model": GEMMA3}, headers={"X-CSRF-Token": csrf(page)}
    )
    context = shown.json()["model_info"]["gemma3.context_length"]
    assert gemma[4] == f"{context:,}"


def test_a_pull_shows_progress_to_the_end_then_load_unload_and_delete(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    page.on("dialog", lambda dialog: dialog.accept())
    catalog = models(page)
    expect(catalog.locator(f"tr[data-model='{PULLED}']")).to_have_count(0)
    watch_progress(page, "Pull progress")
    page.get_by_label("Model name").fill(PULLED)
    page.get_by_role("button", name="Pull", exact=True).click()
    expect(page.locator(".models-pull-status")).to_have_text(f"Pulled {PULLED}.", timeout=120_000)
    seen = progress_values(page, "Pull progress")
    total = page.get_by_label("Pull progress").evaluate("(bar) => bar.max")
    assert total > GGUF_BYTES  # the weights and the small layers, every byte counted
    assert seen[0] == 0 and seen[-1] == total, seen
    assert seen == sorted(seen), seen  # it only advances
    row = catalog.locator(f"tr[data-model='{PULLED}']")
    # Listed once its GGUF metadata is read (its tokenizer parsed in Python: seconds).
    expect(row).to_have_attribute("data-state", "available", timeout=60_000)
    assert cells(row)[1:4] == ["llama", "134.52M", "Q4_1"]

    page.get_by_role("button", name=f"Load {PULLED}").click()
    expect(row).to_have_attribute("data-state", "loaded", timeout=60_000)
    expect(row.locator(".state-badge")).to_contain_text("Loaded")
    assert PULLED in [m["name"] for m in page.request.get("/api/ps").json()["models"]]
    page.get_by_role("button", name=f"Unload {PULLED}").click()
    expect(row).to_have_attribute("data-state", "available")
    assert PULLED not in [m["name"] for m in page.request.get("/api/ps").json()["models"]]

    page.get_by_role("button", name=f"Delete {PULLED}").click()
    expect(row).to_have_count(0)
    assert PULLED not in [m["name"] for m in page.request.get("/api/tags").json()["models"]]


def test_a_pull_the_registry_cannot_serve_shows_the_servers_error(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    models(page)
    page.get_by_label("Model name").fill("nobody/nothing:v9")
    page.get_by_role("button", name="Pull", exact=True).click()
    expect(page.get_by_role("alert").filter(has_text="nobody/nothing")).to_be_visible()


def test_placement_is_set_shown_and_stopped(desk: Desk) -> None:
    page = desk.logged_in(ADMIN)
    page.on("dialog", lambda dialog: dialog.accept())
    models(page)
    page.get_by_label("Model to place").select_option(GEMMA3)
    page.get_by_label("Replicas").fill("2")
    page.get_by_role("button", name="Place", exact=True).click()
    row = page.get_by_role("table", name="Placements").locator(f"tr[data-model='{GEMMA3}']")
    expect(row.locator("td").first).to_have_text("2")
    wanted = page.request.get("/api/fleet/placements").json()["placements"]
    assert [(p["model"], p["replicas"]) for p in wanted] == [(GEMMA3, 2)]
    page.get_by_role("button", name=f"Stop placing {GEMMA3}").click()
    expect(row).to_have_count(0)
    assert page.request.get("/api/fleet/placements").json()["placements"] == []


def test_a_user_sees_the_catalog_without_the_admins_controls(desk: Desk) -> None:
    page = desk.logged_in(USER)
    catalog = models(page)
    assert "Actions" not in catalog.locator("thead th").all_inner_texts()
    expect(page.get_by_label("Model name")).to_have_count(0)
    expect(page.get_by_role("table", name="Placements")).to_have_count(0)
    refused = page.request.post(
        "/api/pull", data={"model": PULLED}, headers={"X-CSRF-Token": csrf(page)}
    )
    assert refused.status == 403 and "admin" in refused.json()["error"]


def test_a_model_loaded_elsewhere_shows_loaded_without_a_reload(
    desk: Desk, desk_server: Server, session_key: Callable[[Server, str], str]
) -> None:
    page = desk.logged_in(USER)
    row = models(page).locator(f"tr[data-model='{GEMMA3}']")
    expect(row).to_have_attribute("data-state", "available")
    key = session_key(desk_server, USER)
    client = ollama.Client(host=desk_server.url, headers={"Authorization": f"Bearer {key}"})
    client.generate(model=GEMMA3, prompt="", keep_alive="5m")  # loads it, as Ollama does
    expect(row).to_have_attribute("data-state", "loaded", timeout=15_000)
    client.generate(model=GEMMA3, prompt="", keep_alive=0)  # unloads it
    expect(row).to_have_attribute("data-state", "available", timeout=15_000)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessible_in_light_and_dark_with_screenshots(desk: Desk, scheme: str) -> None:
    page = desk.logged_in(ADMIN, color_scheme=scheme, bypass_csp=True)
    catalog = models(page)
    page.get_by_role("button", name=f"Load {SMOLLM2}").click()
    expect(catalog.locator(f"tr[data-model='{SMOLLM2}']")).to_have_attribute(
        "data-state", "loaded", timeout=60_000
    )
    violations = _serious_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_role("button", name="Maximise Models").click()
    page.screenshot(path=SCREENSHOTS / f"models-{scheme}.png")
    page.get_by_role("button", name=f"Unload {SMOLLM2}").click()
    expect(catalog.locator(f"tr[data-model='{SMOLLM2}']")).to_have_attribute(
        "data-state", "available"
    )


def test_at_phone_width_nothing_but_a_table_scrolls_sideways(desk: Desk) -> None:
    page = desk.logged_in(ADMIN, width=390, height=800)
    models(page)
    whole = page.locator(".models")
    assert whole.evaluate("(whole) => whole.scrollWidth <= whole.clientWidth")
