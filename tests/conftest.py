"""Shared pytest hooks, fixtures and helpers (tests import the helpers: `from conftest import free_port`)."""

import socket

import pytest


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
