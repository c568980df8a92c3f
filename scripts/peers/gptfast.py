"""gptfast: a compiled plain-PyTorch Qwen3 in the style of gpt-fast — fused qkv and gate-up weights,
a static KV cache at fixed addresses, the decode step under torch.compile(mode="reduce-overhead",
fullgraph=True) so each step replays as one CUDA graph. Written here from the Qwen3 architecture
(HF modeling_qwen3 semantics: q/k RMSNorm per head before RoPE, rotate-half RoPE, GQA, SwiGLU).
Also imported by quality.py for its teacher-forced logits."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def load_checkpoint(d, device):
    from safetensors.torch import load_file
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f), device=device))
    return sd


def build(model_dir, dtype=None, device="cuda"):
    import torch
    import torch.nn.functional as F
    from torch import nn

    dtype = dtype or torch.bfloat16
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cfg = cfg.get("text_config", cfg)

    def rmsnorm(x, w, eps):
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    class Layer(nn.Module):
        def __init__(self, sd, p):
            super().__init__()
            g = lambda k: sd[p + k].to(dtype)  # noqa: E731
            # (q_dim + 2 kv_dim, hidden): one matmul for q, k and v
            self.register_buffer("wqkv", torch.cat([g("self_attn.q_proj.weight"), g("self_attn.k_proj.weight"),
                                                    g("self_attn.v_proj.weight")]))
            self.register_buffer("wo", g("self_attn.o_proj.weight"))          # (hidden, q_dim)
            # (2 intermediate, hidden): gate rows then up rows
            self.register_buffer("w13", torch.cat([g("mlp.gate_proj.weight"), g("mlp.up_proj.weight")]))
            self.register_buffer("w2", g("mlp.down_proj.weight"))             # (hidden, intermediate)
            self.register_buffer("ln1", g("input_layernorm.weight"))
            self.register_buffer("ln2", g("post_attention_layernorm.weight"))
            self.register_buffer("qn", g("self_attn.q_norm.weight"))          # (head_dim)
            self.register_buffer("kn", g("self_attn.k_norm.weight"))

    class Qwen3(nn.Module):
        def __init__(self):
            super().__init__()
            sd = load_checkpoint(model_dir, device)
            self.H, self.nh, self.nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
            self.D = cfg.get("head_dim") or 128  # Qwen3Config's default (not hidden / heads)
            self.I = cfg["intermediate_size"]
            self.eps = cfg.get("rms_norm_eps", 1e-6)
            rp = cfg.get("rope_parameters") or {}
            self.theta = cfg.get("rope_theta") or rp.get("rope_theta", 1e6)
            self.vocab = cfg["vocab_size"]
            self.register_buffer("embed", sd["model.embed_tokens.weight"].to(dtype))  # (vocab, hidden)
            self.register_buffer("norm", sd["model.norm.weight"].to(dtype))
            head = sd.get("lm_head.weight")
            self.register_buffer("head", self.embed if head is None else head.to(dtype))  # (vocab, hidden)
            self.layers = nn.ModuleList(Layer(sd, f"model.layers.{i}.") for i in range(cfg["num_hidden_layers"]))
            del sd
            self.max_seq = 0

        def setup_caches(self, max_seq):
            """Static KV cache (1, n_kv, max_seq, head_dim) per layer, and RoPE tables (max_seq, head_dim)."""
            if max_seq == self.max_seq:
                return
            self.max_seq = max_seq
            for l in self.layers:
                l.register_buffer("kc", torch.zeros(1, self.nkv, max_seq, self.D, dtype=dtype, device=device))
                l.register_buffer("vc", torch.zeros(1, self.nkv, max_seq, self.D, dtype=dtype, device=device))
                # Fixed addresses: the CUDA graph of the decode step writes into these in place.
                torch._dynamo.mark_static_address(l.kc)
                torch._dynamo.mark_static_address(l.vc)
            inv = 1.0 / (self.theta ** (torch.arange(0, self.D, 2, device=device, dtype=torch.float64) / self.D))
            scale = 1.0
            rs = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
            rtype = rs.get("rope_type", rs.get("type", "default"))
            if rtype not in ("default", "dynamic"):  # YaRN / linear: transformers' own initializer
                from transformers import AutoConfig
                from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
                inv, scale = ROPE_INIT_FUNCTIONS[rtype](AutoConfig.from_pretrained(model_dir), device)
                inv = inv.to(device=device, dtype=torch.float64)
            f = torch.outer(torch.arange(max_seq, device=device, dtype=torch.float64), inv)
            emb = torch.cat([f, f], dim=-1)
            self.register_buffer("cos", (emb.cos() * scale).to(dtype))
            self.register_buffer("sin", (emb.sin() * scale).to(dtype))
            self.register_buffer("cols", torch.arange(max_seq, device=device))

        def forward(self, idx, pos):
            """idx (1, T) token ids at positions pos (T,) -> logits (1, T, vocab) float32."""
            T = idx.shape[1]
            x = F.embedding(idx, self.embed)
            mask = (self.cols[None, :] <= pos[:, None])[None, None]  # (1, 1, T, max_seq)
            cos, sin = self.cos[pos][None, :, None, :], self.sin[pos][None, :, None, :]
            qd, kd = self.nh * self.D, self.nkv * self.D
            for l in self.layers:
                h = rmsnorm(x, l.ln1, self.eps)
                q, k, v = F.linear(h, l.wqkv).split([qd, kd, kd], dim=-1)
                q = rmsnorm(q.view(1, T, self.nh, self.D), l.qn, self.eps)
                k = rmsnorm(k.view(1, T, self.nkv, self.D), l.kn, self.eps)
                q = (q * cos + rotate_half(q) * sin).transpose(1, 2)
                k = (k * cos + rotate_half(k) * sin).transpose(1, 2)
                v = v.view(1, T, self.nkv, self.D).transpose(1, 2)
                l.kc.index_copy_(2, pos, k)
                l.vc.index_copy_(2, pos, v)
                y = F.scaled_dot_product_attention(q, l.kc, l.vc, attn_mask=mask, enable_gqa=True)
                x = x + F.linear(y.transpose(1, 2).reshape(1, T, qd), l.wo)
                h = rmsnorm(x, l.ln2, self.eps)
                g, u = F.linear(h, l.w13).split([self.I, self.I], dim=-1)
                x = x + F.linear(F.silu(g) * u, l.w2)
            return F.linear(rmsnorm(x, self.norm, self.eps), self.head).float()

    return Qwen3().eval()


class GptFast:
    PREFILL_CHUNK = 1024

    def __init__(self, model_dir):
        import torch
        import torch._inductor.config as ic
        self.torch = torch
        # gpt-fast also sets coordinate_descent_tuning, which multiplies compile time; the time
        # limit of one device call cannot afford it.
        for k, v in (("fx_graph_cache", True),):
            try:
                setattr(ic, k, v)
            except (AttributeError, KeyError):
                pass
        torch._dynamo.config.cache_size_limit = 64
        self.m = build(model_dir)
        self.vocab = self.m.vocab
        self.version = f"torch {torch.__version__} (own model, compiled decode step)"

        def step(tok, pos):
            return self.m(tok, pos)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        self.step = torch.compile(step, mode="reduce-overhead", fullgraph=True)

    def _cache_for(self, need):
        self.m.setup_caches(((need + 255) // 256) * 256)

    def prefill(self, ids):
        torch = self.torch
        t = torch.tensor([ids], device="cuda")
        with torch.no_grad():
            for s in range(0, len(ids), self.PREFILL_CHUNK):
                chunk = t[:, s:s + self.PREFILL_CHUNK]
                logits = self.m(chunk, torch.arange(s, s + chunk.shape[1], device="cuda"))
        return logits[:, -1].argmax(-1, keepdim=True)

    def decode(self, first, start, n):
        torch = self.torch
        cur, out = first, []
        pos = torch.tensor([start], device="cuda")
        with torch.no_grad():
            for _ in range(n):
                cur = self.step(cur, pos).clone()  # clone: the graph's output buffer is reused
                out.append(cur)
                pos += 1
        return torch.cat(out, dim=1)

    def run(self, ids, n):
        torch = self.torch
        self._cache_for(len(ids) + n + 1)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        first = self.prefill(ids)
        first_id = int(first)  # the host has the token: TTFT ends here
        t1 = time.perf_counter()
        toks = self.decode(first, len(ids), n)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        return [first_id] + toks[0].tolist(), t1 - t0, t2 - t1

    def sweep(self, depth, fill, n):
        torch = self.torch
        self._cache_for(depth + n + 1)
        self.prefill(fill[:depth])
        first = torch.tensor([[fill[depth]]], device="cuda")
        self.decode(first, depth, n)  # compile/record for this cache size, untimed
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.decode(first, depth, n)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def peak_alloc(self):
        return self.torch.cuda.max_memory_allocated()


def main():
    fw = "gpt-fast-style"
    args = common.parse_args(f"{fw}: compiled plain-PyTorch Qwen3 decode benchmark")
    for mod in ("torch", "safetensors"):
        if not common.have_module(mod):
            common.not_installed(fw, mod, args)
    import torch
    if not torch.cuda.is_available():
        common.error(fw, "no CUDA device visible to torch", args)

    def notes(row, impl, nv):
        from torch._dynamo.utils import counters
        row["notes"] = (f"decode step under torch.compile(mode=reduce-overhead, fullgraph=True): "
                        f"{counters['stats']['unique_graphs']} graph(s) compiled (one per KV-cache size)")

    common.measure_and_emit(fw, args, lambda: GptFast(args.model), notes)


if __name__ == "__main__":
    main()
