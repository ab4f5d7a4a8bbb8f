"""A Hugging Face checkpoint in and out: a tiny random Qwen3 built with transformers (config,
safetensors, a ChatML tokenizer built with `tokenizers`; nothing downloaded) is fine-tuned with
LoRA on a `messages` jsonl through `hf("dir")` + `hf_tokenizer("dir")`, exported, and
transformers' greedy `generate` on the export gives the tokens tnx's own sampler gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.chat_tokenizer import write_chatml_tokenizer
from tunix_dsl.runtime.cli_commands import main as tnx

PIPELINE = """
pipeline chat { seed = 0 }
tokenizer tok = hf_tokenizer("ckpt")
model base = hf("ckpt", tokenizer = tok)
dataset talks = jsonl("talks.jsonl")
stage tune: sft {
  model = base
  data = talks
  lora = lora(rank = 4, alpha = 8)
  steps = 6
  batch_size = 4
  max_seq_len = 64
  optimizer = adamw(lr = 1e-2)
}
export tune.model to "out/chat" as "hf"
"""

PROMPTS = [
    [{"role": "user", "content": "2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "name a color"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
     {"role": "user", "content": "bye"}],
]


def make_checkpoint(directory: Path) -> None:
    import torch
    import transformers

    config = transformers.Qwen3Config(
        vocab_size=259, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=258, pad_token_id=256)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # O(1) logits: a layout error cannot hide in near-ties
        for name, p in model.named_parameters():
            p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.3 * torch.randn_like(p))
    model.save_pretrained(directory)
    write_chatml_tokenizer(directory)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hfround")
    make_checkpoint(work / "ckpt")
    talks = [[{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": str(a + b)},
              {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "ok"}]
             for a in range(4) for b in range(4)]
    (work / "talks.jsonl").write_text("".join(json.dumps({"messages": t}) + "\n" for t in talks))
    (work / "p.tnx").write_text(PIPELINE)
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    rows = [json.loads(line) for line in (work / "run/stages/tune/metrics.jsonl").open()]
    assert len(rows) == 6 and rows[-1]["loss"] < rows[0]["loss"]  # it trained
    return work / "run" / "exports" / "out" / "chat"


def test_transformers_generates_what_the_tnx_sampler_generates(exported: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunix_dsl.data.tokenizers import HFTokenizer
    from tunix_dsl.models.hf import load_hf
    from tunix_dsl.models.sampler import Sampler
    from tunix_dsl.runtime.chat_data import ChatCodec, prompt_tokens

    ours = HFTokenizer.from_dir(exported)
    codec = ChatCodec(lambda t: ours.encode(t), lambda m, g: ours.apply_chat_template(
        m, add_generation_prompt=g), ours.bos_id, ours.eos_id, frozenset(ours.stop_ids))
    sampler = Sampler(load_hf(exported), pad_id=ours.pad_id, stop_ids=ours.stop_ids)
    tok = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported, torch_dtype=torch.float32).eval()
    lengths = []
    for messages in PROMPTS:
        prompt = prompt_tokens(messages, codec)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                      return_dict=True)["input_ids"]
        assert list(ids) == prompt  # the template renders alike in both
        out = sampler([prompt], max_new_tokens=8, temperature=0.0)
        n = int(np.asarray(out.lengths)[0])
        expected = np.asarray(out.tokens)[0, :n].tolist()
        generated = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                   dtype=torch.long), max_new_tokens=8, do_sample=False)
        assert generated[0, len(prompt):].tolist() == expected, messages
        lengths.append(n)
    assert max(lengths) > 1  # more than a lone stop token was compared
