"""Shared fixtures: the real images and real MobileNet weights from ../shared/data.

``KERAS_HOME`` points at a folder where the shared weights file is linked under its
official name, so ``weights="imagenet"`` resolves offline exactly as on a user's
machine with a warm Keras cache.

Modules marked ``pure`` need neither ../shared nor an optional extra; without
../shared only they run (the others are skipped, saying why). Tests of an optional
extra are marked ``extra("openvino")`` / ``extra("ray")``; without it they are
skipped, saying how to install it. In CI (``CI=true``) nothing may be skipped: a
missing ../shared or extra stops the run at once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from tests.generated import TINY_SIZE, make_images, write_tiny_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BNECK_SHARED", ROOT.parent / "shared")).resolve()
DATA = SHARED / "data" / "cats_and_dogs_small"
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_WEIGHTS = SHARED / "data" / "weights" / MOBILENET_FILE

# The real extractor used across the suite: MobileNet v1 alpha 0.25, real ImageNet weights.
MOBILENET = dict(backbone="mobilenet", alpha=0.25, size=224, weights="imagenet")


SHARED_PRESENT = DATA.is_dir() and MOBILENET_WEIGHTS.is_file()
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
EXTRAS = {"openvino": ("openvino", "nncf"), "ray": ("ray",), "docs": ("mkdocs",)}  # extra -> the modules it installs


def _missing(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def pytest_addoption(parser):
    parser.addoption(
        "--matrix", action="store_true", help="also run the full matrix (every keras.applications constructor)"
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "pure: needs neither ../shared nor an optional extra")
    config.addinivalue_line("markers", "extra(name): needs the optional extra NAME (pip install -e '.[NAME]')")
    config.addinivalue_line("markers", "matrix: the full backbone matrix, run with --matrix (deselected otherwise)")
    if IN_CI:
        problems = [] if SHARED_PRESENT else [f"the shared test data ({DATA} and {MOBILENET_WEIGHTS})"]
        problems += [f"the [{e}] extra ({', '.join(_missing(e))})" for e in EXTRAS if _missing(e)]
        if problems:
            raise pytest.UsageError(
                f"CI runs every test, but {' and '.join(problems)} is missing "
                "(set BNECK_SHARED to the shared/ folder; scripts/setup.sh installs the extras)."
            )


# The modules whose tests take longest (pytest --durations), started first: the two xdist workers then
# finish together instead of one waiting on a long test collected last.
LONGEST_FIRST = (
    "features/backbones/test_families.py",
    "reliability/test_kill_anywhere.py",
    "features/extraction/test_ray_engine.py",
    "pipeline/runner/test_compose.py",
    "reliability/test_security_code.py",
    "reliability/test_concurrency.py",
    "test_pure.py",
)


def _longest_first(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(indexed):
        index, item = indexed
        module = item.nodeid.split("::")[0].removeprefix("tests/")
        return (rank.get(module, len(rank)), index)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]


def pytest_collection_modifyitems(config, items):
    _longest_first(items)
    if not config.getoption("--matrix"):
        matrix = [item for item in items if item.get_closest_marker("matrix")]
        if matrix:
            config.hook.pytest_deselected(items=matrix)
            items[:] = [item for item in items if not item.get_closest_marker("matrix")]
    for item in items:
        if not SHARED_PRESENT and item.get_closest_marker("pure") is None:
            item.add_marker(pytest.mark.skip(reason=f"needs ../shared ({DATA}); set BNECK_SHARED"))
        for mark in item.iter_markers("extra"):
            if _missing(mark.args[0]):
                item.add_marker(
                    pytest.mark.skip(reason=f"needs the [{mark.args[0]}] extra: pip install -e '.[{mark.args[0]}]'")
                )


@pytest.fixture(scope="session", autouse=True)
def keras_home(tmp_path_factory):
    """A Keras home whose models/ holds the shared weights under their official name (when present),
    and an empty bneck weights folder: no test sees the weights a user added on this machine."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    if SHARED_PRESENT:
        os.symlink(MOBILENET_WEIGHTS, home / "models" / MOBILENET_FILE)
    old = {name: os.environ.get(name) for name in ("KERAS_HOME", "BNECK_WEIGHTS")}
    os.environ["KERAS_HOME"] = str(home)
    os.environ["BNECK_WEIGHTS"] = str(tmp_path_factory.mktemp("bneck_weights"))
    yield home
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own default cache folder and its own record of checked models
    ($BNECK_STATE), so no test sees another's rows or checks."""
    cache = tmp_path / "bneck-cache"
    monkeypatch.setenv("BNECK_CACHE", str(cache))
    monkeypatch.setenv("BNECK_STATE", str(tmp_path / "bneck-state"))
    return cache


def copy_subset(dest: Path, per_class: int, splits=("train", "validation", "test"), offset: int = 0) -> Path:
    """Copy ``per_class`` real images per class and split into ``dest``; returns ``dest``."""
    for split in splits:
        for cls in ("cats", "dogs"):
            src = DATA / split / cls
            names = sorted(os.listdir(src), key=lambda n: int(n.split(".")[1]))
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for name in names[offset : offset + per_class]:
                shutil.copy(src / name, out / name)
    return dest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """The extractor of the pure tests: MobileNet v1 alpha 0.25 at 64 px (12x fewer pixels than
    MOBILENET) with random weights written to a file in the session (``tests/generated.py``).
    Everything but accuracy behaves as with MOBILENET, and nothing comes from ../shared."""
    path = write_tiny_weights(tmp_path_factory.mktemp("tiny") / "tiny_mobilenet.weights.h5")
    return dict(backbone="mobilenet", alpha=0.25, size=TINY_SIZE, weights=str(path))


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """train/validation/test with 6 generated images per class (no ../shared needed)."""
    return make_images(tmp_path / "data", 6)


@pytest.fixture
def small_data(tmp_path) -> Path:
    """train/validation/test with 6 real images per class."""
    return copy_subset(tmp_path / "data", 6)


RAY_NOTES: dict = {}  # environment every worker of the ``nodes`` cluster gets (tests/pipeline/training)
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """A head and two worker nodes (separate raylets, one CPU each); this process is the driver."""
    import ray
    from ray.cluster_utils import Cluster

    RAY_NOTES["BNECK_TEST_NOTES"] = str(tmp_path_factory.mktemp("notes"))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": FAST_FAILURE_DETECTION})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "KERAS_HOME": os.environ["KERAS_HOME"], **RAY_NOTES}},
    )
    yield cluster
    ray.shutdown()
    cluster.shutdown()
