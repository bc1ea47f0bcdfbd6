"""Error advice in the entry point's words: flags for the command line, config keys for `bneck run`,
keyword arguments for the API. Walks every option of every stage table."""

from __future__ import annotations

import pytest

from bneck.core.advice import advice_for, config_words, keyword_words, restate
from bneck.core.errors import BneckError, WeightsError
from bneck.pipeline.runner.config import TABLES

pytestmark = pytest.mark.pure

OPTIONS = [(stage, name) for stage, table in TABLES.items() for name, o in table.options.items() if o.cli]


@pytest.mark.parametrize("stage,name", OPTIONS)
def test_every_stage_option_is_said_as_its_config_key_and_as_a_keyword(stage, name):
    flag = "--" + name.replace("_", "-")
    message = f"pass {flag} PATH, or {flag} none, or {flag} 3, or {flag}=x_1; --set {stage}.{name}=1 stays."
    as_config = restate(message, config_words(stage, TABLES[stage].options))
    assert flag + " " not in as_config and flag + "=" not in as_config
    for value in ('"PATH"', '"none"', "3", '"x_1"'):
        assert f"`{name} = {value}` under [{stage}]" in as_config
    assert f"--set {stage}.{name}=1 stays." in as_config
    as_keyword = restate(message, keyword_words)
    for value in ("PATH", '"none"', "3", '"x_1"'):
        assert f"{name}={value}" in as_keyword
    assert f"--set {stage}.{name}=1" in as_keyword


def test_flags_of_another_stage_and_prose_after_a_flag_are_kept_apart():
    said = restate("--units is for train; --weights is bad; --max-memory 2G", config_words("extract", {"weights"}))
    assert said == "--units is for train; `weights` under [extract] is bad; --max-memory 2G"


def test_the_exception_keeps_its_type_and_only_its_words_change():
    with pytest.raises(WeightsError) as caught, advice_for(keyword_words):
        raise WeightsError("pass --weights none for random weights")
    assert str(caught.value) == 'pass weights="none" for random weights'
    with pytest.raises(KeyError), advice_for(keyword_words):  # not a BneckError: untouched
        raise KeyError("--weights")
    assert issubclass(WeightsError, BneckError)


@pytest.mark.parametrize(
    "said",
    [
        "Received: weights='/tmp/--weights none/--out x.h5', and no file exists at /tmp/a/--lr 0.5/x.h5.",
        "classes differ: ['--lr 0.5', 'ok'] against ['ok']",
        "Create it with `bneck extract DATA_DIR --out FOLDER` first.",
    ],
)
def test_paths_quoted_names_and_code_spans_are_never_reworded(said):
    assert restate(said, keyword_words) == said
    assert restate(said, config_words("extract", {"weights", "out", "lr"})) == said
