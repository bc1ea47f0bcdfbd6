"""``finetune()``'s options: every one of FINETUNE a keyword-only parameter with the table's default,
checked before any work; the augmentation given one by one or as one ``augment`` dict (the dict wins),
exactly as the ``FINETUNE.check({**options, **augmentation_params(augment)})`` it replaced."""

from __future__ import annotations

import pytest

from bneck.core.errors import ConfigError
from bneck.core.options import signature_matches
from bneck.pipeline.finetuning import stage
from bneck.pipeline.finetuning.options import AUGMENTATIONS, FINETUNE, augmentation_params
from bneck.pipeline.finetuning.stage import finetune

pytestmark = pytest.mark.pure


class Seen(Exception):
    """Raised where the body first uses its options: what it holds is the options it runs with."""


@pytest.fixture
def body_options(monkeypatch):
    """Call finetune() up to the first line that uses its checked options; returns those options."""

    def fingerprint(opts):
        raise Seen(opts)

    monkeypatch.setattr(stage, "fingerprint", fingerprint)

    def call(**kwargs):
        with pytest.raises(Seen) as seen:
            finetune("no/head", None, "no/out", verbose=False, **kwargs)
        return seen.value.args[0]

    return call


def test_every_option_is_a_keyword_only_parameter_with_the_tables_default():
    assert signature_matches(finetune, FINETUNE, names=list(FINETUNE.options)) == []
    assert set(AUGMENTATIONS) <= set(FINETUNE.options)  # the augmentation too, one by one


@pytest.mark.parametrize(
    "options, augment",
    [
        ({}, None),
        ({"epochs": 3, "lr": 1, "rotation": 5}, None),  # an int for a float option becomes a float
        ({"rotation": 5, "shift": 0.3}, {"rotation": 10, "flip": False}),  # the dict wins where both say
        ({"rotation": -1}, {"rotation": 0}),  # even over a value it would refuse: the dict's is used
        ({"views": 2, "cache_dir": "c"}, {}),
    ],
)
def test_the_body_runs_with_what_the_old_check_gave(body_options, options, augment):
    expected = FINETUNE.check({**options, **augmentation_params(augment or {}, defaults=False)})
    got = body_options(augment=augment, **options)
    assert got == expected and list(got) == list(FINETUNE.options)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"augment": {"blur": 1}}, "unknown augmentation(s) blur; allowed: rotation, shift, shear, zoom, flip."),
        (
            {"augment": {"rotation": -1}},
            "augmentation rotation must be a finite number >= 0 and <= 360. Received: rotation=-1",
        ),
        ({"augment": {"blur": 1}, "epochs": 0}, "unknown augmentation(s) blur"),  # the dict is checked first
        ({"rotation": -1}, "--rotation must be a finite number >= 0 and <= 360. Received: rotation=-1"),
        ({"epochs": 0}, "--epochs must be an integer >= 1 and <= 10000. Received: epochs=0"),
        ({"optimizer": "lion"}, "--optimizer must be one of"),
        (
            {"epoch": 3},
            "finetune() got an unexpected keyword argument 'epoch'; its finetune options are "
            "unfreeze_from, epochs, lr,",
        ),
    ],
)
def test_a_bad_value_is_one_config_error_before_any_work(tmp_path, kwargs, says):
    with pytest.raises(ConfigError) as caught:
        finetune(str(tmp_path / "no-head"), None, str(tmp_path / "out"), verbose=False, **kwargs)
    assert says in str(caught.value)
    assert list(tmp_path.iterdir()) == []
