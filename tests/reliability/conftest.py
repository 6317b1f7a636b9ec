"""Fixtures of the reliability suite: one tiny model per session, a fresh server per test."""

from __future__ import annotations

import pytest

import harness


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return harness.make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def start_server(tmp_path, tiny_model):
    """start_server(config_changes) -> a started harness.Server, killed at teardown."""
    started = []

    def start(config_changes=None, model_dir=None, wait_serving=True):
        server = harness.Server(tmp_path / f"server{len(started)}", model_dir or tiny_model,
                                config_changes, wait_serving)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.__exit__(None, None, None)
