"""The classifiers stage 2 trains, one module each, registered on import (see ``registry``).

Adding a scikit-learn classifier: a module here ending with ``register_classifier(...)``, and
its name in ``BUILTIN`` below (or, from outside bneck, ``register_classifier`` in your own
code, or declared under the ``bneck.classifiers`` entry-point group of your package: imported
on the first lookup, after these; docs/train.md, "From your own package"). ``BUILTIN``'s order
is the order help texts and ``bneck train --help`` list them in (explicit, so that no import
sorter can change it).
"""

from __future__ import annotations

import importlib

from bneck.pipeline.training.classifiers.build import build_sklearn, build_streamed, exact_exports
from bneck.pipeline.training.classifiers.registry import (
    Classifier,
    ClassifierNames,
    builtins_registered,
    get_classifier,
    is_keras,
    list_classifiers,
    register_classifier,
    registered_skops_types,
    unregister_classifier,
)

# one entry per built-in module ("heads" registers dense and gap-dense)
BUILTIN = ("heads", "logreg", "linear_svm", "svm", "knn", "random_forest", "hist_gradient_boosting", "mlp")

for _name in BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")  # each module registers its classifier
builtins_registered()  # the plugins' classifiers come after these, on the first lookup

__all__ = [
    "BUILTIN",
    "Classifier",
    "ClassifierNames",
    "build_sklearn",
    "build_streamed",
    "exact_exports",
    "get_classifier",
    "is_keras",
    "list_classifiers",
    "register_classifier",
    "registered_skops_types",
    "unregister_classifier",
]
