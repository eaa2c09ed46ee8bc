"""Prompt templates: the seeds' exact text as presets, placeholders declared and checked at load."""

from __future__ import annotations

import json

import pytest

from builder.errors import BadInput
from builder.prompts import load_template, presets
from tests.conftest import SEED

SAFER_INSTRUCT = ("Below is a response to a certain instruction. Write the instruction that the response is trying "
                  "to complete.\n\n### response:\n{output}\n\n### Instruction:\n")


def test_presets_are_listed():
    assert {"safer_instruct_reverse", "alpaca", "llama2"} <= set(presets())


def test_safer_instruct_reverse_is_the_design_text_exactly():
    t = load_template("safer_instruct_reverse")
    assert t.text == SAFER_INSTRUCT
    assert t.placeholders == ("output",)
    assert t.render(output="Just torrent it.") == SAFER_INSTRUCT.format(output="Just torrent it.")
    assert len(t.hash) == 64 and t.hash == load_template("safer_instruct_reverse").hash


@pytest.mark.parametrize("name, config", [
    ("alpaca", "safety-tuned-llamas/configs/alpaca.json"),
    ("llama2", "safety-defense/instruction-llms-safety-eval/configs/llama2.json"),
])
def test_seed_templates_match_the_seed_configs(name, config):
    path = SEED / config
    if not path.is_file():
        pytest.skip("../shared/seed-data is absent")
    seed = json.loads(path.read_text(encoding="utf-8"))
    t = load_template(name)
    assert t.text == seed["prompt_no_input"]
    assert t.text_with_input == seed["prompt_input"]
    assert t.response_split == seed["response_split"]
    assert t.render(instruction="Do X", input="") == seed["prompt_no_input"].format(instruction="Do X")
    assert t.render(instruction="Do X", input="ctx") == seed["prompt_input"].format(instruction="Do X", input="ctx")


def test_llama2_keeps_the_seed_quirks():
    t = load_template("llama2")
    rendered = t.render(instruction="Say hi", input="")
    assert rendered == "[INST] <<SYS>>\nSay hi\n<<SYS>>\n\n[/INST]"  # instruction in the system slot, closing <<SYS>>
    assert "<</SYS>>" not in rendered
    assert t.render(instruction="Say hi", input="doc").startswith("<s>[INST]")


def test_check_fields_fails_at_load_naming_the_placeholder():
    t = load_template("alpaca")
    t.check_fields({"instruction", "input", "output"})
    with pytest.raises(BadInput, match=r"\{instruction\}"):
        t.check_fields({"text", "output"})


def test_user_templates_txt_and_json(tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("Q: {text}\nLabel {{literal}}: {category}\n", encoding="utf-8")
    t = load_template(str(txt))
    assert t.name == "mine" and t.placeholders == ("text", "category")
    assert t.render(text="a", category="b") == "Q: a\nLabel {literal}: b\n"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"template": "Hi {name}", "placeholders": ["user"]}), encoding="utf-8")
    with pytest.raises(BadInput, match="placeholders declared"):
        load_template(str(bad))

    with pytest.raises(BadInput, match="unknown template"):
        load_template("no_such_preset")
