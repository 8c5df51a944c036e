"""A plugin's `requirements` (issue 24's first step): PEP 508 strings met by the packages this xcore runs with.

Each test runs what a worker serves (conftest's `plugin_host`) with real zips dropped into the plugins folder.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import create_account
from test_plugin_manager import Host, make_zip, open_host, route
from xcore.runtime import Runtime


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


def test_requirements_met_by_xcores_packages_load_and_are_shown_with_their_versions(host: Host) -> None:
    requirements = ["PyYAML>=5", "msgspec", "tomli; python_version < '3.0'"]
    host.drop(make_zip(host.staging, "needy", "1.0.0", route("met"), requirements=requirements))
    view = host.wait_view("needy", "active")
    assert host.get("/app/needy/hello").json()["says"] == "met"
    shown = {r["name"].lower(): r for r in view["requirements"]}
    assert set(shown) == {"pyyaml", "msgspec"}, "the marker that does not hold here is no requirement"
    assert shown["pyyaml"]["version"] == importlib.metadata.version("PyYAML")
    assert shown["pyyaml"]["source"] == "xcore" and shown["pyyaml"]["requirement"] == "PyYAML>=5"


def test_a_requirement_that_clashes_with_xcores_own_package_is_refused_naming_both(host: Host) -> None:
    host.drop(make_zip(host.staging, "clash", "1.0.0", route("never"), requirements=["pyyaml<1"]))
    view = host.wait_view("clash", "failed")
    version = importlib.metadata.version("PyYAML")
    assert f"pyyaml<1 clashes with PyYAML {version}, which xcore ships" in view["error"], view["error"]
    assert host.get("/app/clash/hello").status_code == 404


def test_a_requirement_nothing_meets_is_refused_naming_it(host: Host) -> None:
    wanted = ["msgspec", "surely-not-a-package-xcore-ships>=1.0"]
    host.drop(make_zip(host.staging, "absent", "1.0.0", route("never"), requirements=wanted))
    view = host.wait_view("absent", "failed")
    assert "surely-not-a-package-xcore-ships>=1.0 is not among the packages of this xcore" in view["error"]
    assert "msgspec" not in view["error"].split("requirements:", 1)[1]


def test_a_requirement_that_is_not_pep_508_is_refused_by_the_manifest_check(host: Host) -> None:
    host.drop(make_zip(host.staging, "typo", "1.0.0", route("never"), requirements=["httpx >= = 1"]))
    view = host.wait_view("typo", "failed")
    assert "requirements: 'httpx >= = 1' is not a PEP 508 requirement" in view["error"], view["error"]
