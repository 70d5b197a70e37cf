#!/usr/bin/env python3
"""Golden values for the synthetic test models, from llama.cpp (an independent implementation).

Runs `rsd-mkmodel` into a temporary directory, loads every synthetic GGUF with llama.cpp through
the PyPI package llama-cpp-python, and records into tests/goldens/synthetic.json:
  * each model file's sha256 (the C++ tests check the writer still produces these bytes);
  * for a few fixed prompts (token ids, BOS first): llama.cpp's greedy 24-token continuation,
    and from one teacher-forced pass over prompt + continuation (logits_all=True) the top-1 id
    and top-1 margin (log-softmax top1 - top2, nats) at every position;
  * a self-check: llama.cpp's logits against a float64 numpy forward pass written from the
    Hugging Face copy (model.safetensors, rotate-half RoPE). Agreement proves the GGUF writer
    permuted Q/K as llama.cpp's converter does (llama) or left them (qwen2), independently of our
    own reader and engine.

CI never runs this. Run it by hand after changing the synthetic models:
  /opt/llref/bin/python tools/goldens/synthetic_goldens.py --mkmodel build/tools/rsd-mkmodel
"""

import argparse
import ctypes
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

GREEDY_TOKENS = 24
N_CTX = 256


def prompts_for(vocab):
    """Fixed prompts (token ids, BOS=1 first), valid for every vocabulary of >= 300 tokens."""
    lcg = [1]
    x = 12345
    for _ in range(39):
        x = (x * 1103515245 + 12345) % (1 << 31)
        lcg.append(3 + x % (vocab - 3))
    return [
        [1],
        [1, 100, 200, 50, 7, 290, 3, 260],
        [1] + list(range(260, 276)),
        lcg,
    ]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def llama_cpp_versions():
    import llama_cpp
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    ggml = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    ggml.ggml_commit.restype = ctypes.c_char_p
    ggml.ggml_version.restype = ctypes.c_char_p
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp": llama_cpp.llama_cpp.llama_version().decode(),
        "ggml_version": ggml.ggml_version().decode(),
        "ggml_commit": ggml.ggml_commit().decode(),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }


# ---- float64 reference forward from the Hugging Face copy ------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = raw[base + b:base + end]
        if e["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif e["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2")
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(e["dtype"])
        out[name] = a.astype(np.float64).reshape(e["shape"])
    return out


def reference_logits(hf_dir, tokens):
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    w = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x, heads):  # rotate-half, positions 0..n-1
        n = x.shape[0]
        x = x.reshape(n, heads, hd)
        inv = theta ** (-np.arange(0, hd // 2) * 2.0 / hd)
        ang = np.arange(n)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    x = w["model.embed_tokens.weight"][tokens]
    n = len(tokens)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = h @ w[p + "self_attn.q_proj.weight"].T + w.get(p + "self_attn.q_proj.bias", 0)
        k = h @ w[p + "self_attn.k_proj.weight"].T + w.get(p + "self_attn.k_proj.bias", 0)
        v = h @ w[p + "self_attn.v_proj.weight"].T + w.get(p + "self_attn.v_proj.bias", 0)
        q, k = rope(q, nh), rope(k, nkv)
        v = v.reshape(n, nkv, hd)
        rep = nh // nkv
        att = np.zeros((n, nh, hd))
        for hh in range(nh):
            s = q[:, hh] @ k[:, hh // rep].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            att[:, hh] = s @ v[:, hh // rep]
        x = x + att.reshape(n, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    out = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(x, w["model.norm.weight"]) @ out.T


# ---- llama.cpp ---------------------------------------------------------------------------------

def run_llama(gguf, prompts, vocab):
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, logits_all=True,
                n_threads=1, n_threads_batch=1, type_k=0, type_v=0, flash_attn=False,
                seed=0, verbose=False)
    if llm.n_vocab() != vocab:
        raise RuntimeError(f"{gguf}: llama.cpp sees {llm.n_vocab()} tokens, expected {vocab}")
    results = []
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        greedy = []
        for _ in range(GREEDY_TOKENS):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(nxt)
            llm.eval([nxt])
        seq = prompt + greedy
        llm.reset()
        llm.eval(seq)
        logits = np.array(llm.scores[:len(seq)], dtype=np.float64)
        top = np.argsort(-logits, axis=1, kind="stable")
        rows = np.arange(len(seq))
        margin = logits[rows, top[:, 0]] - logits[rows, top[:, 1]]
        results.append({
            "prompt": prompt,
            "greedy": greedy,
            "teacher_forced_top1": top[:, 0].tolist(),
            "teacher_forced_margin": [round(float(m), 6) for m in margin],
            "_logits": logits,
        })
    return results


def compact_json(obj, indent=0):
    """JSON with objects expanded one key per line and lists of scalars kept on one line."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {compact_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [pad + compact_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(obj)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mkmodel", default=os.path.join(root, "build", "tools", "rsd-mkmodel"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "goldens", "synthetic.json"))
    args = ap.parse_args()

    listing = subprocess.run([args.mkmodel, "--list"], check=True, capture_output=True,
                             text=True).stdout
    catalog = [line.split(None, 1) for line in listing.splitlines() if line.strip()]
    models = []
    with tempfile.TemporaryDirectory(prefix="rsd-goldens-") as tmp:
        subprocess.run([args.mkmodel, f"--out={tmp}"], check=True, capture_output=True)
        for name, description in catalog:
            gguf = os.path.join(tmp, name + ".gguf")
            hf = os.path.join(tmp, name + "-hf")
            vocab = json.load(open(os.path.join(hf, "config.json")))["vocab_size"]
            files = {name + ".gguf": sha256(gguf)}
            for f in sorted(os.listdir(hf)):
                files[f"{name}-hf/{f}"] = sha256(os.path.join(hf, f))
            results = run_llama(gguf, prompts_for(vocab), vocab)
            worst, scale = 0.0, 0.0
            for r in results:
                ref = reference_logits(hf, r["prompt"] + r["greedy"])
                worst = max(worst, float(np.abs(ref - r["_logits"]).max()))
                scale = max(scale, float(np.abs(ref).max()))
                del r["_logits"]
            rel = worst / scale
            print(f"{name:18s} llama.cpp vs float64 reference: max|diff| {worst:.3g}, "
                  f"relative {rel:.3g}", file=sys.stderr)
            dtype = name.rsplit("-", 1)[-1] if name.rsplit("-", 1)[-1] in (
                "f16", "bf16", "q8_0", "q4_0", "q4_1") else "f32"
            # F32 weights: llama.cpp computes in float32; quantized ones also quantize activations.
            limit = 1e-4 if dtype == "f32" else 5e-2
            if rel > limit:
                raise RuntimeError(f"{name}: llama.cpp disagrees with the reference ({rel:.3g})")
            models.append({
                "name": name,
                "description": description.strip(),
                "dtype": dtype,
                "files": files,
                "reference_check": {"max_abs_diff": round(worst, 8), "max_abs_logit": round(scale, 6)},
                "prompts": results,
            })
    golden = {
        "generator": "tools/goldens/synthetic_goldens.py",
        "reference": llama_cpp_versions(),
        "settings": {"n_ctx": N_CTX, "n_threads": 1, "type_k": "f32", "type_v": "f32",
                     "flash_attn": False, "greedy_tokens": GREEDY_TOKENS,
                     "margin": "logit(top1) - logit(top2) = log-softmax difference, nats"},
        "models": models,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(compact_json(golden) + "\n")
    print(f"wrote {args.out} ({len(models)} models)", file=sys.stderr)


if __name__ == "__main__":
    main()
