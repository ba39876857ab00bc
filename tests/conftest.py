"""Shared pytest hooks, fixtures and helpers (tests import the helpers: `from conftest import free_port`)."""

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the tests' preset, merged over config.yaml as Snakemake merges --configfile files in order
TINY_CONFIG = ROOT / "tests" / "config" / "tiny.yaml"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (item.rep_setup, rep_call, rep_teardown), so fixtures can
    tell whether the test failed (the browser tests then save a screenshot of the page)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# The two kinds of CPU the suite meets (CI's processor differs from session to session): without
# native bf16 (AVX2: `precision: auto` trains in fp32) and with it (AVX512-BF16: auto trains in bf16).
CPU_KINDS = {"avx2": False, "native-bf16": True}
TRAIN_PRECISION = {"avx2": "fp32", "native-bf16": "bf16"}


@pytest.fixture(scope="module", params=list(CPU_KINDS))
def cpu_kind(request):
    """Run a module's trainings and evaluations as each kind of CPU would, whatever this machine is, so
    a numeric check that holds on one kind only fails on every machine (emulated bf16 on an AVX2 CPU is
    slow, but fine for the few iterations of tiny models these tests train)."""
    from resnet_repro import device

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "cpu_has_native_bf16", lambda: CPU_KINDS[request.param])
        yield request.param


def free_port():
    """A TCP port free on this host now (for a tracking server or a rendezvous the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_data_set(uri, run_id, barrier, results):
    from resnet_repro.tracking import inputs
    from resnet_repro.tracking import store as mlflow_store

    c = mlflow_store.client(uri)
    spec = {"data": {"kind": "digits"}, "schedule": {"kind": "multistep"}}
    found = inputs.dataset_inputs(spec, {"train_images": 10, "test_images": 5})
    barrier.wait()  # every job looks the data set up at the same moment: none finds it
    try:
        c.log_inputs(run_id, datasets=found)
        results.put("ok")
    except Exception as e:
        results.put(str(e).splitlines()[0])


def log_one_data_set_at_once(uri, jobs=6):
    """`jobs` processes log the same data set (two splits) to runs of one new experiment at the same
    moment, through the project's MLflow client; each must succeed, and the store keep each split once."""
    import multiprocessing
    import uuid

    from resnet_repro.tracking import store as mlflow_store

    ctx = multiprocessing.get_context("fork")
    c = mlflow_store.client(uri)
    exp = c.create_experiment(f"race-{uuid.uuid4().hex[:8]}")
    runs = [c.create_run(exp).info.run_id for _ in range(jobs)]
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_log_data_set, args=(uri, r, barrier, results)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [results.get(timeout=5) for _ in runs] == ["ok"] * jobs
    inputs = [c.get_run(r).inputs.dataset_inputs for r in runs]
    assert all(len(i) == 2 for i in inputs)
    assert len({(i.dataset.name, i.dataset.digest) for ins in inputs for i in ins}) == 2


def _tag_one_run(uri, run_id, keys, barrier, results):
    from resnet_repro.tracking import store as mlflow_store

    c = mlflow_store.client(uri)
    barrier.wait()  # every job sets the same new tags at the same moment: each looks a tag up, misses it
    try:
        for key in keys:
            c.set_tag(run_id, key, "same value")
        results.put("ok")
    except Exception as e:
        results.put(str(e).splitlines()[0])


def tag_one_run_at_once(uri, jobs=6, keys=20):
    """`jobs` processes set the same `keys` new tags of one run at the same moment through the project's
    MLflow client (as two `track eval` jobs of tables that share a training do); each must succeed."""
    import multiprocessing

    from resnet_repro.tracking import store as mlflow_store

    ctx = multiprocessing.get_context("fork")
    c = mlflow_store.client(uri)
    run = c.create_run(c.create_experiment("tags-race")).info.run_id
    names = [f"view{i}_precision" for i in range(keys)]
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_tag_one_run, args=(uri, run, names, barrier, results)) for _ in range(jobs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    said = [results.get(timeout=5) for _ in range(jobs)]
    assert said == ["ok"] * jobs, said
    assert {k: v for k, v in c.get_run(run).data.tags.items() if k in names} == dict.fromkeys(names, "same value")


def doc_commands():
    """{command: [page names]}: every line of the ```sh blocks of README.md and docs/*.md but the
    generated recipes page (tests/test_docs.py checks that one against the plan), its `# comment` cut."""
    import re

    out = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if page.name == "recipes.md":
            continue
        for block in re.findall(r"^```sh\n(.*?)^```", page.read_text(), re.S | re.M):
            for line in block.splitlines():
                command = re.sub(r"\s+#\s.*$", "", line).strip()
                if command:
                    out.setdefault(command, []).append(page.name)
    return out
