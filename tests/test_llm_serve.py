"""The openai backend against a real OpenAI-compatible server: `transformers serve` on loopback serving
the converted packaged model, through the real `openai` client (never patched)."""

from __future__ import annotations

import urllib.request

from builder.llm import GenParams, LLMSpec, Request, run_requests


def test_chat_and_completions_against_transformers_serve(transformers_serve, tmp_path):
    url = transformers_serve.url
    p = GenParams(max_new_tokens=8)
    spec = LLMSpec(backend="openai", model=transformers_serve.model, base_urls=[url], concurrency=4, timeout_s=300)
    requests = [Request("a", prompt="Name a colour.", params=p),
                Request("b", messages=(("system", "Answer in one word."), ("user", "Name a fruit.")), params=p),
                Request("c", prompt="Is fire cold? Answer Yes or No.", params=GenParams(max_new_tokens=1), choices=("Yes", "No"))]
    out = run_requests(spec, requests, cache=tmp_path / "c.sqlite")
    for key in "ab":
        c = out.completions[key]
        assert c.text.strip() and c.prompt_tokens > 5 and 0 < c.completion_tokens <= 8
        assert c.finish_reason in ("stop", "length")
    # transformers serve ignores logprobs: a clear reason, not a silent None
    assert "no logprobs" in out.failures["c"].reason and "--backend hf" in out.failures["c"].reason

    raw = LLMSpec(backend="openai", model=transformers_serve.model, base_urls=[url], use_chat_template=False, timeout_s=300)
    out2 = run_requests(raw, [Request("r", prompt="The capital of France is", params=GenParams(max_new_tokens=4))],
                        cache=tmp_path / "c.sqlite")
    assert out2.completions["r"].completion_tokens > 0

    # a rerun is served from the cache: the server sees no new request
    again = run_requests(spec, requests[:2], cache=tmp_path / "c.sqlite")
    assert again.summary.cached == 2 and again.completions["a"].text == out.completions["a"].text


def test_packaged_name_maps_to_the_served_folder(transformers_serve, tmp_path):
    """`--model smollm2-135m` with the openai backend asks the server for the converted folder it serves."""
    spec = LLMSpec(backend="openai", model="smollm2-135m", base_urls=[transformers_serve.url], timeout_s=300)
    out = run_requests(spec, [Request("a", prompt="Say hi.", params=GenParams(max_new_tokens=4))], cache=tmp_path / "c.sqlite")
    assert out.completions["a"].text
    with urllib.request.urlopen(transformers_serve.url + "/models", timeout=10) as r:
        assert r.status == 200
