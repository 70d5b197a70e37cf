#!/usr/bin/env python3
"""Writes tests/goldens/smollm2.json: reference values from llama.cpp for SmolLM2-135M-Instruct.

What it records (all from llama.cpp through its Python binding, never from our own code):
  - the llama.cpp / ggml version and commit, and the model file's sha256;
  - "tokenize": a varied corpus tokenized with add_special=False, once with special-token parsing
    (special=True) and once without (special=False); entries that are not valid UTF-8 carry "hex"
    instead of "text";
  - "chat": a 2-turn conversation rendered with the model's own Jinja chat template (jinja2) and
    tokenized with parse_special=True, with the messages it came from;
  - "greedy" (see "reference.note" on how far these numbers can be trusted): for raw-text prompts (no BOS: SmolLM2's add_bos is false) and chat-templated prompts,
    the prompt tokens, llama.cpp's 32 greedy tokens (argmax of the logits, temperature 0; an
    end-of-generation token does not stop it, "first_eog" says where one came), and from ONE
    teacher-forced evaluation of prompt + continuation with logits for every position, per
    continuation position: top-1 id, top-2 id, top-1 margin in nats (log-softmax top1 - top2) and
    the top-1 log-probability.

CI never runs this; the JSON is committed. To regenerate (any machine with Python 3.9+ and a C++
compiler; building llama-cpp-python from source takes several minutes):

  python3 -m venv /opt/llref
  /opt/llref/bin/pip install llama-cpp-python jinja2 numpy   # CPU build from the PyPI sdist
  tools/fetch-model.sh                                        # models/SmolLM2-135M-Instruct.Q4_1.gguf
  /opt/llref/bin/python tools/goldens/smollm2_goldens.py

The values depend on the llama.cpp version (recorded in the JSON) and on its arithmetic: llama.cpp
quantizes activations to 8 bits for its Q4_1 dot products, so its logits differ from exact
arithmetic on the dequantized weights by up to ~1 logit on this model (measured: 0.5-1.2 max abs
over the vocabulary). Greedy tokens are only comparable up to positions whose margin is clear.
"""

import ctypes
import hashlib
import json
import os
import sys

import jinja2
import llama_cpp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "goldens", "smollm2.json")
N_THREADS = 2
N_GREEDY = 32

PROSE = ("The history of the printing press is a story of invention and diffusion. Johannes "
         "Gutenberg's movable type, developed around 1440, spread across Europe within decades; "
         "by 1500 presses in more than 250 cities had produced millions of books.")

CORPUS = [
    "Hello world",
    "Hello, world! How are you?",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces   between   words",
    "\ttab\tseparated\tvalues",
    "line1\nline2\r\nline3\n\n\nline4",
    "\n\n\n",
    "   \n  \t  ",
    "\r\n\r\n",
    "    indented code",
    "Tab\tand  space\t \tmix",
    "I'm sure you can't, won't, they're, we've, you'll, he'd",
    "I'M SURE THEY'RE LOUD, WE'LL SEE",
    "it's 'quoted' and ' lonely ' apostrophes''",
    "3.14159 and 2,718,281 and 1234567890",
    "Numbers: 0 1 12 123 1234 12345 123456",
    "Price: $1,299.99 (20% off!)",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "#include <stdio.h>\nint main() { printf(\"hi\\n\"); return 0; }",
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i];\n}",
    "https://example.com/path?query=1&b=2#frag",
    "email: someone@example.org",
    "snake_case_variable and camelCaseVariable and kebab-case",
    "...!!!???---***",
    "ALL CAPS SENTENCE WITH NUMBERS 42",
    "supercalifragilisticexpialidocious",
    "a" * 40,
    PROSE,
    "café naïve résumé façade",
    "Ελληνικά και русский текст",
    "日本語のテキストです。",
    "中文测试，标点符号！",
    "한국어 문장입니다",
    "عربي مع أرقام ١٢٣",
    "हिन्दी पाठ",
    "Mixed: English, 日本語, Русский, and 123.",
    "emoji 🙂😀🎉👍🏽 family 👨‍👩‍👧",
    "flags 🇫🇷🇯🇵 and ❤️",
    "\u00a0non-breaking\u00a0space and\u3000ideographic space",
    "zero\u200bwidth\u200djoiner",
    "combining: e\u0301 a\u0308 n\u0303",
    "math: ∑ ∫ √ ≤ ≥ ≠ ∞ π ½ ²",
    "quotes “smart” ‘single’ «guillemets»",
    "ﬁ ligature ｆｕｌｌｗｉｄｔｈ",
    "Ġ byte-level lookalikes ĊĠ",
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>",
    "text<|im_end|>more<|im_start|>",
    "<|im_start|<|im_end|>>",
    "<repo_name>foo<file_sep>bar",
    "",
    " ",
    "a",
    b"\xff\xfe invalid \xc3\x28 bytes \xe2\x82",
    b"lone continuation \x80\x80 and overlong \xc0\xaf end",
]

RAW_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a",
    "def fibonacci(n):",
    "The quick brown fox",
    "1, 2, 3, 4, 5,",
    "In 1969, Neil Armstrong",
    "Water boils at a temperature of",
    "日本の首都は",
]

CHAT_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Translate 'good morning' to Spanish."}],
    [{"role": "user", "content": "List three primary colors."}],
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."},
     {"role": "user", "content": "And of Germany?"}],
]


def ggml_info():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    info = {}
    for name in ("ggml_version", "ggml_commit"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            info[name] = fn().decode()
    return info


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def chat_template(llm):
    return llm.metadata["tokenizer.chat_template"]


def render(template_src, messages):
    # As transformers' apply_chat_template (and llama.cpp's own engine) configure Jinja.
    env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template_src).render(messages=messages, add_generation_prompt=True,
                                                bos_token="", eos_token="<|im_end|>")


def tokenize_corpus(vocab):
    out = []
    for entry in CORPUS:
        raw = entry if isinstance(entry, bytes) else entry.encode("utf-8")
        rec = {"hex": raw.hex()} if isinstance(entry, bytes) else {"text": entry}
        rec["special"] = vocab.tokenize(raw, add_bos=False, special=True)
        rec["plain"] = vocab.tokenize(raw, add_bos=False, special=False)
        out.append(rec)
    return out


def log_softmax(row):
    row = row.astype(np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def greedy(llm, prompt_tokens, eog_ids):
    llm.reset()
    llm.eval(prompt_tokens)
    toks, rows = [], []
    for _ in range(N_GREEDY):
        logits = np.array(llm.scores[llm.n_tokens - 1])
        rows.append(logits)
        t = int(np.argmax(logits))
        toks.append(t)
        llm.eval([t])
    # One teacher-forced pass over prompt + continuation, logits at every position.
    llm.reset()
    llm.eval(prompt_tokens + toks)
    top1, top2, margin, logprob = [], [], [], []
    diff = 0.0
    for i in range(N_GREEDY):
        row = np.array(llm.scores[len(prompt_tokens) - 1 + i])
        diff = max(diff, float(np.abs(row - rows[i]).max()))
        lp = log_softmax(row)
        order = np.argsort(-lp, kind="stable")
        a, b = int(order[0]), int(order[1])
        top1.append(a)
        top2.append(b)
        margin.append(round(float(lp[a] - lp[b]), 4))
        logprob.append(round(float(lp[a]), 4))
    first_eog = next((i for i, t in enumerate(toks) if t in eog_ids), -1)
    return {"tokens": toks, "first_eog": first_eog, "top1": top1, "top2": top2,
            "top1_margin": margin, "top1_logprob": logprob,
            "incremental_vs_batched_max_logit_diff": round(diff, 3)}


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is missing: run tools/fetch-model.sh first")
    vocab = llama_cpp.Llama(MODEL, vocab_only=True, verbose=False)
    # F32 K/V and no flash attention: the one llama.cpp CPU configuration whose attention runs in
    # F32 throughout, and in which incremental decoding and a batched pass give identical logits
    # (with the default F16 cache they differ by up to ~1 logit on this model; flash attention
    # rounds K/V to F16 even with an F32 cache).
    llm = llama_cpp.Llama(MODEL, n_ctx=1024, n_batch=1024, n_threads=N_THREADS,
                          n_threads_batch=N_THREADS, logits_all=True, seed=0, verbose=False,
                          flash_attn=False, type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32)
    src = chat_template(vocab)
    eog_ids = sorted(t for t in range(llm.n_vocab())
                     if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), t))

    chat_msgs = CHAT_PROMPTS[-1]
    chat_text = render(src, chat_msgs)
    doc = {
        "model": os.path.basename(MODEL),
        "model_sha256": sha256(MODEL),
        "reference": {
            "llama_cpp_python": llama_cpp.__version__,
            **ggml_info(),
            "settings": f"CPU, n_threads={N_THREADS}, n_ctx=1024, n_batch=1024, F32 K/V cache, "
                        "flash attention off, greedy = argmax of logits",
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "note": "llama.cpp quantizes activations to 8 bits for Q4_1 dot products, so a tiny "
                    "difference in float rounding can flip one activation's rounding and move "
                    "logits by up to ~1: its own incremental decoding and one batched pass agree "
                    "exactly until such a flip, then differ by 0.4-1.5 (per prompt: "
                    "incremental_vs_batched_max_logit_diff), which is why the batched top1 "
                    "sometimes differs from the greedy token. Compare greedy tokens only up to "
                    "the first position whose top1_margin is below about 1 nat.",
        },
        "eog_ids": eog_ids,
        "tokenize": tokenize_corpus(vocab),
        "chat": {
            "messages": chat_msgs,
            "rendered": chat_text,
            "tokens": vocab.tokenize(chat_text.encode(), add_bos=True, special=True),
        },
        "greedy": [],
    }
    for prompt in RAW_PROMPTS:
        toks = vocab.tokenize(prompt.encode(), add_bos=True, special=False)  # add_bos is false
        doc["greedy"].append({"kind": "raw", "prompt": prompt, "prompt_tokens": toks,
                              **greedy(llm, toks, set(eog_ids))})
    for msgs in CHAT_PROMPTS:
        text = render(src, msgs)
        toks = vocab.tokenize(text.encode(), add_bos=True, special=True)
        doc["greedy"].append({"kind": "chat", "messages": msgs, "rendered": text,
                              "prompt_tokens": toks, **greedy(llm, toks, set(eog_ids))})

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        # One record per line keeps the file small and its diffs readable.
        f.write("{\n")
        keys = list(doc)
        for i, k in enumerate(keys):
            v = doc[k]
            sep = "," if i + 1 < len(keys) else ""
            if isinstance(v, list) and v and isinstance(v[0], dict):
                f.write(f"  {json.dumps(k)}: [\n")
                for j, item in enumerate(v):
                    tail = "," if j + 1 < len(v) else ""
                    f.write(f"    {json.dumps(item, ensure_ascii=False, separators=(',', ':'))}{tail}\n")
                f.write(f"  ]{sep}\n")
            else:
                f.write(f"  {json.dumps(k)}: "
                        f"{json.dumps(v, ensure_ascii=False, separators=(',', ':'))}{sep}\n")
        f.write("}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
