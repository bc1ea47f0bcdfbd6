"""The classifiers stage 2 trains, one module each, registered on import (see ``registry``).

Adding a scikit-learn classifier: a module here ending with ``register_classifier(...)``, and
its import below (or, from outside bneck, ``register_classifier`` in your own code).
"""
from __future__ import annotations

# The built-in classifiers, in the order they are listed (help texts, `bneck train --help`).
from bneck.pipeline.training.classifiers import (
                                                          heads,  # noqa: E402,F401  dense, gap-dense
                                                          hist_gradient_boosting,  # noqa: E402,F401
                                                          knn,  # noqa: E402,F401
                                                          linear_svm,  # noqa: E402,F401
                                                          logreg,  # noqa: E402,F401
                                                          mlp,  # noqa: E402,F401
                                                          random_forest,  # noqa: E402,F401
                                                          svm,  # noqa: E402,F401
)
from bneck.pipeline.training.classifiers.build import build_sklearn, build_streamed, exact_exports  # noqa: E402
from bneck.pipeline.training.classifiers.registry import (
                                                          Classifier,
                                                          ClassifierNames,
                                                          get_classifier,
                                                          is_keras,
                                                          list_classifiers,
                                                          register_classifier,
                                                          registered_skops_types,
                                                          unregister_classifier,
)

__all__ = ["Classifier", "ClassifierNames", "build_sklearn", "build_streamed", "exact_exports", "get_classifier",
           "is_keras", "list_classifiers", "register_classifier", "registered_skops_types", "unregister_classifier"]
