"""The MLflow UI as a person sees it: Debian's Chromium, driven by Playwright, against `mlflow ui` on a
store this module makes itself (the tiny preset's Figure 1: two short trainings, tracked, and the
figure logged as a report run). Screenshots go to test-artifacts/browser/.

Needs /usr/bin/chromium (`bash scripts/install-chromium.sh`) and the `playwright` package; Playwright
never downloads a browser of its own here. Skipped, with the reason, where either is missing."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("RESNET_REPRO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "browser"
EXPERIMENT = "resnet-repro · tiny · ImageFolder 'digits-imagefolder' (20 px crops), digits (8x8)"
TIMEOUT_MS = 60000  # the React app renders after several API calls; generous on 2 busy cores

if not CHROMIUM.exists():
    pytest.skip(
        f"Chromium not found at {CHROMIUM}: run `bash scripts/install-chromium.sh` (Debian, as root) to install it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
from mlflow import MlflowClient  # noqa: E402

expect = sync_api.expect


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny-preset store of our own: Figure 1 needs only plain-20 and plain-56 (6 iterations each)."""
    work = tmp_path_factory.mktemp("browser-store")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run(
        [
            str(BIN / "snakemake"),
            "results/mlflow/tiny/figure1.json",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(ROOT / "config.yaml"),
            str(TINY_CONFIG),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    assert r.returncode == 0, f"snakemake failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    train = client.get_experiment_by_name(EXPERIMENT)
    reports = client.get_experiment_by_name(f"{EXPERIMENT} · reports")
    (run,) = client.search_runs([train.experiment_id], "params.model = 'plain20'")
    (fig,) = client.search_runs([reports.experiment_id], "tags.artifact = 'figure1'")
    return {"work": work, "train": train, "reports": reports, "run": run, "figure_run": fig}


@pytest.fixture(scope="module")
def server(store):
    """`mlflow ui` on a free loopback port, one worker and no job runner (2 cores), stopped at the end."""
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", OMP_NUM_THREADS="1")
    log = open(store["work"] / "mlflow-ui.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{store['work'] / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=store["work"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise AssertionError(
                    f"mlflow ui did not start:\n{(store['work'] / 'mlflow-ui.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:  # see conftest.py
        page.screenshot(path=str(SHOTS / f"FAILED-{request.node.name}.png"))
    context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def test_experiments_are_listed(server, page):
    page.goto(f"{server}/#/experiments")
    for name in (EXPERIMENT, f"{EXPERIMENT} · reports"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    shot(page, "experiments.png")


def test_training_run_page_shows_its_metric_chart(server, store, page):
    run = store["run"]
    page.goto(f"{server}/#/experiments/{store['train'].experiment_id}/runs/{run.info.run_id}")
    expect(page.get_by_role("heading", name=run.info.run_name)).to_be_visible()  # "plain20 · digits · seed 0"
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("train_error")
    card = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(has_text="train_error")
    expect(card).to_have_count(1)
    # a drawn Plotly line through the logged points: steps 3 and 6 of the tiny preset
    expect(card.locator("path.js-line").first).to_be_attached()
    expect(card.locator("path.point")).to_have_count(2)
    expect(card).to_contain_text(run.info.run_name)
    shot(page, "training-run-metrics.png")


def test_report_run_figure_artifact_opens(server, store, page):
    fig = store["figure_run"]
    page.goto(f"{server}/#/experiments/{store['reports'].experiment_id}/runs/{fig.info.run_id}/artifacts")
    page.get_by_text("figure1.png", exact=True).first.click()
    img = page.locator('img[alt="figure1.png"]')
    expect(img).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    from PIL import Image

    width, height = Image.open(store["work"] / "reports" / "figure1.png").size
    assert img.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [width, height]
    shot(page, "report-run-figure1.png")


def test_experiment_opens_on_the_runs_table(server, store, page):
    """The address the project prints for an experiment (track setup, the live log, docs/tracking.md) opens its
    runs table with the Dataset column filled, not MLflow 3's GenAI overview (traces); the experiment
    is also tagged as model training."""
    from resnet_repro.tracking.store import ui_path

    assert store["train"].tags["mlflow.experimentKind"] == "custom_model_development"
    page.goto(server + ui_path(store["train"].experiment_id))
    expect(page.get_by_role("link", name=store["run"].info.run_name)).to_be_visible()
    expect(page.get_by_text("digits (8x8) · train").first).to_be_visible()  # the Dataset column
    expect(page.get_by_text("Detect Issues", exact=True)).to_have_count(0)
    shot(page, "experiment-runs-table.png")


def test_run_page_shows_its_dataset_and_logged_model(server, store, page):
    run = store["run"]
    page.goto(f"{server}/#/experiments/{store['train'].experiment_id}/runs/{run.info.run_id}")
    expect(page.get_by_text("digits (8x8) · train").first).to_be_visible()
    expect(page.get_by_role("link", name="model", exact=True).first).to_be_visible()
    shot(page, "training-run-overview.png")


def test_models_page_lists_the_logged_models(server, store, page):
    page.goto(f"{server}/#/experiments/{store['train'].experiment_id}/models")
    expect(page.get_by_role("link", name="model", exact=True)).to_have_count(2)  # plain-20 and plain-56
    shot(page, "experiment-models.png")


def test_each_verdict_of_a_reduced_report_fits_in_three_lines_at_1400_px(page, tmp_path):
    """The report as a reader sees it (issue 21): each verdict in one short line of at most 3 lines at
    1400 px (the comparisons folded under it), and the protocol differences once, collapsed."""
    from test_report import build

    from resnet_repro.report import build as report

    made = build(tmp_path, preset="demo")
    out = tmp_path / "reports" / "report.html"
    summary = report.make_report(out, "demo", made["tables"], made["figures"], made["runs"].values(), uri=made["uri"])
    page.goto(out.as_uri())
    lines = page.eval_on_selector_all(
        ".verdict-line",
        "els => els.map(e => e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight))",
    )
    assert len(lines) == len(summary["claims"]) and max(lines) <= 3.2, lines  # 3 lines, and the badge's padding
    assert sum(x > 1.5 for x in lines) > 0  # a check that measures: some verdicts do take more than one line
    assert page.eval_on_selector("details.protocol", "e => e.open") is False
    assert page.locator("details.protocol li").count() == len(summary["protocol"]["reduced"]) > 0
    assert not page.locator("details.protocol li").first.is_visible()  # collapsed
    page.locator("#claims").scroll_into_view_if_needed()
    shot(page, "report-claims.png")
