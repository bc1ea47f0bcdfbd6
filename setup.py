"""One import name for an installed bneck.

The repository keeps ``features/`` (stage 1) and ``pipeline/`` (stages 2 and 3, the
command line) at its top level; the distribution installs them as ``bneck.features`` and
``bneck.pipeline`` beside ``bneck/`` (the public API), and nothing else enters
site-packages, so a user's own ``features.py`` or ``pipeline/`` can never shadow bneck.
setuptools' ``package_dir`` does the mapping; the package list is computed here, so a new
sub-package needs no line anywhere. Everything else is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {"bneck": "bneck", "features": "bneck.features", "pipeline": "bneck.pipeline"}


def _packages() -> list[str]:
    found = []
    for folder, package in FOLDERS.items():
        found += [package] + [f"{package}.{sub}" for sub in find_packages(where=folder)]
    return found


setup(
    package_dir={package: folder for folder, package in FOLDERS.items()},
    packages=_packages(),
    # The backbone catalog scripts/backbone_catalog.py derives from Keras (read without TensorFlow).
    package_data={"bneck.features.backbones": ["catalog.json"]},
)
