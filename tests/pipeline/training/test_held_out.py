"""`train` checks what `evaluate` checks (issue 27): validation or test splits made of training images
are refused before any fit; a few shared images are flagged."""

from __future__ import annotations

import shutil

import pytest

from bneck.core.errors import BneckWarning, DatasetError
from bneck.features import extract
from bneck.pipeline.cli import main
from bneck.pipeline.training.stage import train
from tests.generated import make_images


@pytest.mark.parametrize("copied", [("validation",), ("test",), ("validation", "test")])
def test_splits_copied_from_train_are_refused_before_any_fit(tmp_path, tiny, tiny_data, copied, capsys):
    feats = tmp_path / "feats"
    extract(str(tiny_data), str(feats), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    for split in copied:
        shutil.copy(feats / "train.h5", feats / f"{split}.h5")
    with pytest.raises(DatasetError, match=rf"12 of the 12 images of {copied[0]}\.h5 .* are training images too"):
        train(str(feats), ["logreg"], str(tmp_path / "models"))
    assert not (tmp_path / "models").exists()
    capsys.readouterr()
    assert main(["train", str(feats), "--classifier", "logreg", "--out", str(tmp_path / "m2")]) == 2
    assert "Nothing was trained" in capsys.readouterr().err


def test_a_few_shared_images_are_flagged_and_training_goes_on(tmp_path, tiny):
    data = make_images(tmp_path / "data", 12)
    shutil.copy(data / "train" / "cats" / "cat.0.jpg", data / "validation" / "cats" / "copy.jpg")
    feats = tmp_path / "feats"
    extract(str(data), str(feats), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    with pytest.warns(
        BneckWarning, match=r"1 of the 25 images of validation\.h5 .* first: 'validation/cats/copy\.jpg'"
    ):
        board = train(str(feats), ["logreg"], str(tmp_path / "models"))
    assert board.best.name == "logreg"


def test_the_same_bytes_under_two_classes_are_flagged(tmp_path, tiny):
    data = make_images(tmp_path / "data", 12)
    shutil.copy(data / "train" / "cats" / "cat.0.jpg", data / "train" / "dogs" / "also-a-dog.jpg")
    feats = tmp_path / "feats"
    extract(str(data), str(feats), cache_dir=str(tmp_path / "cache"), verbose=False, **tiny)
    with pytest.warns(BneckWarning, match=r"1 training image\(s\) .* same bytes as an image of another class"):
        train(str(feats), ["logreg"], str(tmp_path / "models"))
