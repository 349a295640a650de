#!/usr/bin/env python3
"""Plain-PyTorch reference for scripts/bench_train.sh: salad's training step written the way a
researcher would write it, run on the batches and initial weights salad_bench_train --dump wrote.

One step: student embeddings (token embeddings, the adapter's outputs placed at the speech
frames, the two marker vectors) -> Qwen2-style decoder (RMSNorm, RoPE, GQA with q/k/v bias,
SwiGLU, tied embeddings); the frozen teacher on the text-only rows under no_grad; full [N, V]
logits of both at the aligned positions; loss = (alpha * KL(teacher || student) + (1 - alpha) *
NLL) / N from log_softmax; backward; clip_grad_norm_; torch.optim.AdamW (the adapter and the
decoder as two groups with their own learning rates, each split into decayed matrices and
undecayed norms/biases/markers as salad does); LambdaLR for salad's linear warm-up. Attention is
matmul + mask + softmax (torch 1.13 has no scaled_dot_product_attention).

Reported like salad's side: median step time, tokens/s (non-padding student positions), MFU from
the same model-FLOP formula (per step: 6 * student non-embedding parameters * student tokens +
6 * V * D * N for the head + 6 * adapter parameters * speech frames + 2 * teacher non-embedding
parameters * teacher positions (padding included, as the trainer counts them) + 2 * V * D * N),
over the fp32 GEMM peak measured in the same run, and the peak RSS. When DIR/salad_result.json
is there (salad's run on the same data), the per-step losses and gradient norms of both are
compared and the tokens/s ratio printed.

  bench_train_reference.py --data DIR [--threads N] [--profile 1] [--op-profile 1]
"""

import argparse
import json
import math
import resource
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# safetensors (no package needed: an 8-byte header length, a JSON header, the raw data)

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dtype = np.dtype(_DTYPES[info["dtype"]])
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=dtype, count=(b - a) // dtype.itemsize, offset=a) \
            if b > a else np.empty(0, dtype=dtype)
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out, meta


# ---------------------------------------------------------------------------------------------
# The model


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x


def rope(position_ids, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # [B, T, Dh/2]
    emb = torch.cat([freqs, freqs], -1)                 # [B, T, Dh]
    return emb.cos()[:, None], emb.sin()[:, None]       # [B, 1, T, Dh]


def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


def attention_mask(valid, doc_ids=None, causal=True):
    """[B, 1, T, T] bool: causal, keys that are not padding, same document; a query always sees
    itself."""
    B, T = valid.shape
    allowed = torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    allowed = allowed[None] & valid.bool()[:, None, :]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, :, None] == doc_ids[:, None, :])
    allowed = allowed | torch.eye(T, dtype=torch.bool)[None]
    return allowed[:, None]


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads, bias):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ v  # [B, H, T, Dh]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, hidden, eps, bias):
        super().__init__()
        self.input_layernorm = RMSNorm(dim, eps)
        self.self_attn = Attention(dim, heads, kv_heads, bias)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.mlp = MLP(dim, hidden)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(
            Block(c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                  c["intermediate_size"], c["rms_norm_eps"], bias=True)
            for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Qwen2(nn.Module):
    """Qwen2 with tied embeddings; returns final hidden states (the loss applies the head)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = DecoderModel(c)

    @property
    def lm_head_weight(self):
        return self.model.embed_tokens.weight

    def forward(self, x, position_ids, attention_mask_, document_ids):
        if x.dtype == torch.long:
            x = self.model.embed_tokens(x)
        head_dim = self.c["hidden_size"] // self.c["num_attention_heads"]
        cos, sin = rope(position_ids, head_dim, self.c["rope_theta"])
        mask = attention_mask(attention_mask_, document_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.model.norm(x)


class Adapter(nn.Module):
    def __init__(self, c, out_dim):
        super().__init__()
        self.c = c
        d = c["hidden_size"]
        self.in_proj = nn.Linear(c["input_dim"], d)
        self.layers = nn.ModuleList(
            Block(d, c["num_heads"], c["num_kv_heads"], c["intermediate_size"], c["rms_norm_eps"],
                  bias=False) for _ in range(c["num_layers"]))
        self.norm = RMSNorm(d, c["rms_norm_eps"])
        self.out_proj = nn.Linear(d, out_dim)
        self.speech_start = nn.Parameter(torch.zeros(out_dim))
        self.speech_end = nn.Parameter(torch.zeros(out_dim))

    def forward(self, features, lengths):
        S, Fr, _ = features.shape
        h = self.in_proj(features)
        pos = torch.arange(Fr)[None].expand(S, Fr)
        valid = pos < lengths[:, None]
        cos, sin = rope(pos, self.c["hidden_size"] // self.c["num_heads"], self.c["rope_theta"])
        mask = attention_mask(valid, None, causal=self.c["causal"])
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.out_proj(self.norm(h))  # [S, F, D]


class SpeechLM(nn.Module):
    def __init__(self, opts):
        super().__init__()
        self.student = Qwen2(opts["decoder"])
        self.adapter = Adapter(opts["adapter"], opts["decoder"]["hidden_size"])
        self.teacher = Qwen2(opts["decoder"])
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def student_hidden(self, b):
        ids = b["student.input_ids"]
        B, T = ids.shape
        x = self.student.model.embed_tokens(ids).reshape(B * T, -1)
        D = x.shape[1]
        lengths = b["speech.lengths"]
        out = self.adapter(b["speech.features"], lengths)  # [S, F, D]
        valid = torch.arange(out.shape[1])[None] < lengths[:, None]
        frames = out.reshape(-1, D)[valid.reshape(-1)]
        x = x.index_copy(0, b["speech.slots"], frames)
        kinds = b["kinds"].reshape(-1, 1)
        x = torch.where(kinds == 3, self.adapter.speech_start, x)
        x = torch.where(kinds == 4, self.adapter.speech_end, x)
        h = self.student(x.view(B, T, D), b["student.position_ids"], b["student.attention_mask"],
                         b["student.document_ids"])
        return h.reshape(B * T, D)[b["loss_index"]]  # [N, D]

    def teacher_hidden(self, b):
        with torch.no_grad():
            h = self.teacher(b["teacher.input_ids"], b["teacher.position_ids"],
                             b["teacher.attention_mask"], b["teacher.document_ids"])
            return h.reshape(-1, h.shape[-1])[b["teacher_loss_index"]]  # [N, D]


def distillation_loss(hs, ht, w_s, w_t, targets, alpha):
    zs = hs @ w_s.t()  # [N, V]
    with torch.no_grad():
        zt = ht @ w_t.t()
    log_ps = F.log_softmax(zs, -1)
    log_pt = F.log_softmax(zt, -1)
    kl = F.kl_div(log_ps, log_pt, reduction="sum", log_target=True)
    nll = F.nll_loss(log_ps, targets, reduction="sum")
    return (alpha * kl + (1 - alpha) * nll) / targets.numel(), kl, nll


# ---------------------------------------------------------------------------------------------
# Benchmark


def gemm_peak_gflops(reps=5):
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def param_groups(model, o):
    groups = []
    for name, module, lr in (("adapter", model.adapter, o["lr_adapter"]),
                             ("llm", model.student, o["lr_llm"])):
        params = list(module.parameters())
        groups.append({"params": [p for p in params if p.dim() >= 2], "lr": lr,
                       "weight_decay": o["weight_decay"], "name": name})
        groups.append({"params": [p for p in params if p.dim() < 2], "lr": lr,
                       "weight_decay": 0.0, "name": name + " (no decay)"})
    return groups


def count(module, skip_embeddings):
    return sum(p.numel() for n, p in module.named_parameters()
               if not (skip_embeddings and "embed_tokens" in n))


def step_flops(model, b, opts):
    kinds = b["kinds"]
    tokens = int((kinds != 0).sum())
    frames = int((kinds == 2).sum())
    n = b["targets"].numel()
    V, D = opts["decoder"]["vocab_size"], opts["decoder"]["hidden_size"]
    return (6.0 * count(model.student, True) * tokens + 6.0 * V * D * n
            + 6.0 * count(model.adapter, False) * frames
            + 2.0 * count(model.teacher, True) * b["teacher.input_ids"].numel()
            + 2.0 * V * D * n), tokens


def train_step(model, opt, sched, params, b, alpha, clip):
    opt.zero_grad()
    hs = model.student_hidden(b)
    ht = model.teacher_hidden(b)
    loss, kl, nll = distillation_loss(hs, ht, model.student.lm_head_weight,
                                      model.teacher.lm_head_weight, b["targets"], alpha)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    sched.step()
    return loss.item(), kl.item(), nll.item(), norm.item()


def profiled_step(model, opt, sched, params, b, alpha, clip):
    """train_step with timers between the parts (the loss on a detached copy of the student
    hidden states, so its backward and the model's are timed apart; same gradients)."""
    t = [time.perf_counter()]

    def lap():
        now = time.perf_counter()
        s = now - t[0]
        t[0] = now
        return s

    ph = {}
    opt.zero_grad()
    ph["zero_grad"] = lap()
    hs = model.student_hidden(b)
    ph["student forward"] = lap()
    ht = model.teacher_hidden(b)
    ph["teacher forward"] = lap()
    leaf = hs.detach().requires_grad_()
    loss, _, _ = distillation_loss(leaf, ht, model.student.lm_head_weight,
                                   model.teacher.lm_head_weight, b["targets"], alpha)
    ph["loss forward"] = lap()
    loss.backward()
    ph["loss backward"] = lap()
    hs.backward(leaf.grad)
    ph["model backward"] = lap()
    torch.nn.utils.clip_grad_norm_(params, clip)
    ph["grad norm + clip"] = lap()
    opt.step()
    sched.step()
    ph["AdamW"] = lap()
    return ph


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder written by salad_bench_train --dump")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", type=int, default=0)
    ap.add_argument("--op-profile", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    peak_before = gemm_peak_gflops()
    print(f"fp32 GEMM peak (2048^3, best of 5) before: {peak_before:.1f} GFLOP/s")

    tensors, meta = load_safetensors(f"{args.data}/batches.safetensors")
    opts = json.loads(meta["options"])
    nb = opts["warmup"] + opts["steps"]
    batches = [{k[len(f"b{i}."):]: v for k, v in tensors.items() if k.startswith(f"b{i}.")}
               for i in range(nb)]
    for b in batches:
        b["kinds"] = b["kinds"].long()
    del tensors

    model = SpeechLM(opts)
    weights, _ = load_safetensors(f"{args.data}/weights.safetensors")
    student = {k: v for k, v in weights.items() if not k.startswith("adapter.")}
    adapter = {k[len("adapter."):]: v for k, v in weights.items() if k.startswith("adapter.")}
    model.student.load_state_dict(student, strict=True)
    model.teacher.load_state_dict(student, strict=True)
    model.adapter.load_state_dict(adapter, strict=True)
    del weights, student, adapter
    model.student.train()
    model.adapter.train()

    o = opts["optim"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(model, o), betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    warm = o["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0)

    alpha, clip = opts["alpha"], o["grad_clip"]
    secs, tps, fps, faults, steps = [], [], [], [], []
    for i, b in enumerate(batches):
        flops, tokens = step_flops(model, b, opts)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        loss, kl, nll, norm = train_step(model, opt, sched, params, b, alpha, clip)
        s = time.perf_counter() - t0
        nf = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        warmup = i < opts["warmup"]
        print(f"step {i + 1}{' (warm-up)' if warmup else ''}: {s:.3f} s, {tokens} tokens, "
              f"{b['targets'].numel()} loss positions, loss {loss:.6f} (kl {kl / b['targets'].numel():.6f} "
              f"nll {nll / b['targets'].numel():.6f}), grad norm {norm:.6f}, {flops / 1e9:.2f} GFLOP, "
              f"{tokens / s:.0f} tok/s, {nf / 1e3:.0f} k minor page faults", flush=True)
        steps.append({"seconds": s, "tokens": tokens, "flops": flops, "loss": loss,
                      "grad_norm": norm})
        if not warmup:
            secs.append(s)
            faults.append(nf)
            tps.append(tokens / s)
            fps.append(flops / s)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peak_after = gemm_peak_gflops()
    peak = max(peak_before, peak_after)
    doc_peak = 152.0 if args.threads == 1 else 306.0
    fl = statistics.median(fps)
    print(f"fp32 GEMM peak after: {peak_after:.1f} GFLOP/s")
    print(f"\nPyTorch reference, {args.threads} threads: median step {statistics.median(secs):.3f} s "
          f"over {len(secs)} steps, {statistics.median(tps):.0f} tokens/s, {fl / 1e9:.1f} model "
          f"GFLOP/s, MFU {100 * fl / (peak * 1e9):.1f}% of the measured peak ({peak:.0f} GFLOP/s), "
          f"{100 * fl / (doc_peak * 1e9):.1f}% of the idle peak ({doc_peak:.0f}), peak RSS {rss:.0f} MiB, "
          f"{statistics.median(faults) / 1e3:.0f} k minor page faults per step")
    result = {"impl": "pytorch", "threads": args.threads,
              "median_step_s": statistics.median(secs), "tokens_per_s": statistics.median(tps),
              "model_gflops_per_s": fl / 1e9, "gemm_peak_before": peak_before,
              "gemm_peak_after": peak_after, "mfu": fl / (peak * 1e9),
              "mfu_idle_peak": fl / (doc_peak * 1e9), "peak_rss_mib": rss,
              "minor_faults_per_step": statistics.median(faults), "steps": steps}
    print("RESULT " + json.dumps(result))

    try:
        with open(f"{args.data}/salad_result.json") as f:
            salad = json.load(f)
    except FileNotFoundError:
        salad = None
    if salad and salad["threads"] == args.threads:
        worst_loss = max(abs(a["loss"] - b["loss"]) / abs(b["loss"])
                         for a, b in zip(salad["steps"], steps))
        worst_norm = max(abs(a["grad_norm"] - b["grad_norm"]) / abs(b["grad_norm"])
                         for a, b in zip(salad["steps"], steps))
        worst_flops = max(abs(a["flops"] - b["flops"]) / b["flops"]
                          for a, b in zip(salad["steps"], steps))
        same_tokens = all(a["tokens"] == b["tokens"] for a, b in zip(salad["steps"], steps))
        print(f"salad vs PyTorch over {len(steps)} steps: worst loss rel diff {worst_loss:.2e}, "
              f"grad norm rel diff {worst_norm:.2e}, FLOP count rel diff {worst_flops:.1e}, "
              f"same token counts: {same_tokens}")
        print(f"SPEEDUP salad / PyTorch tokens/s at {args.threads} threads: "
              f"{salad['tokens_per_s'] / statistics.median(tps):.2f}x "
              f"({salad['tokens_per_s']:.0f} vs {statistics.median(tps):.0f}); peak RSS "
              f"{salad['peak_rss_mib']:.0f} vs {rss:.0f} MiB")

    if args.profile:
        phases = [profiled_step(model, opt, sched, params, b, alpha, clip) for b in batches]
        phases = phases[opts["warmup"]:]
        med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        total = statistics.median(sum(p.values()) for p in phases)
        print(f"\nprofile (train_step with timers; median of {len(phases)} steps, seconds):")
        for k, v in med.items():
            print(f"  {k:58s} {v:8.4f}  {100 * v / total:5.1f}%")
        print(f"  {'total':58s} {total:8.4f}")
    if args.op_profile:
        with torch.autograd.profiler.profile() as prof:
            train_step(model, opt, sched, params, batches[-1], alpha, clip)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
