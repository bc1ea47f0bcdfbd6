"""predictions.csv: every model folder's per-image record, written and read back exactly (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from bneck.pipeline.artifacts import ArtifactError
from bneck.pipeline.predictions_csv import read_predictions, write_predictions

pytestmark = pytest.mark.pure

ODD = ["a,b.jpg", 'quote"d.jpg', "line\nbreak.jpg", "para\u2028sep.jpg", "nel\x85.jpg", "caf\u00e9.jpg"]


def test_any_path_round_trips(tmp_path):
    probs = np.array([[0.25, 0.75]] * len(ODD))
    write_predictions(str(tmp_path / "p.csv"), ["cats", "dogs"], {"test": (ODD, np.array([1] * len(ODD)), probs)})
    rows = read_predictions((tmp_path / "p.csv").read_bytes().decode("utf-8"))
    assert [r["path"] for r in rows] == ODD
    assert all(
        r["true"] == r["predicted"] == "dogs" and r["probabilities"] == {"cats": 0.25, "dogs": 0.75} for r in rows
    )


@pytest.mark.parametrize(
    "text",
    [
        "split,path,true,predicted,cats,dogs\ntest,a.jpg,cats,cats,0.5\n",  # a short row
        "split,path,true,predicted,cats,dogs\ntest,a.jpg,cats,cats,0.5,0.5,9\n",  # a long one
        "split,path,true,predicted,cats,dogs\ntest,a.jpg,cats,cats,half,0.5\n",  # not a number
        "split,path,true,predicted,cats,dogs\ntest,a.jpg,cats,cats,nan,0.5\n",  # not finite
        "split,path,cats,dogs\ntest,a.jpg,0.5,0.5\n",  # columns missing
    ],
)
def test_what_bneck_does_not_write_is_refused_naming_the_file(text):
    with pytest.raises(ArtifactError, match="FOLDER/predictions.csv is not a predictions file bneck writes"):
        read_predictions(text, "FOLDER/predictions.csv")
