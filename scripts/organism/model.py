"""Qwen2ForCausalLM written from scratch in PyTorch, following Hugging Face's modeling_qwen2.py
(RMSNorm, rotary embedding with rotate_half, grouped-query attention with q/k/v biases and no
o_proj bias, SwiGLU MLP, optional tied embeddings). It is the training program's model and a
second implementation of the architecture next to the engine (server/model/transformer.cc);
tests/organism compares the two on the shipped weights."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Qwen2Shape:
    vocab_size: int
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 3
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def hf_config(self, bos_id: int, eos_id: int) -> dict:
        fields = asdict(self)
        return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **fields,
                "hidden_act": "silu", "use_sliding_window": False, "sliding_window": 2048,
                "max_window_layers": fields["num_hidden_layers"], "attention_dropout": 0.0,
                "initializer_range": 0.02, "use_cache": True, "bos_token_id": bos_id,
                "eos_token_id": eos_id, "torch_dtype": "float32"}


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, shape: Qwen2Shape):
        super().__init__()
        self.heads, self.kv_heads, self.dim = shape.num_attention_heads, shape.num_key_value_heads, shape.head_dim
        self.q_proj = nn.Linear(shape.hidden_size, self.heads * self.dim, bias=True)
        self.k_proj = nn.Linear(shape.hidden_size, self.kv_heads * self.dim, bias=True)
        self.v_proj = nn.Linear(shape.hidden_size, self.kv_heads * self.dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.dim, shape.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, return_probs=False):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        repeat = self.heads // self.kv_heads  # repeat_kv: query head h reads KV head h // repeat
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim) + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(batch, length, self.heads * self.dim)
        return self.o_proj(out), (probs if return_probs else None)


class MLP(nn.Module):
    def __init__(self, shape: Qwen2Shape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
        self.up_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
        self.down_proj = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, shape: Qwen2Shape):
        super().__init__()
        self.input_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.self_attn = Attention(shape)
        self.post_attention_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.mlp = MLP(shape)

    def forward(self, x, cos, sin, mask, return_probs=False):
        attended, probs = self.self_attn(self.input_layernorm(x), cos, sin, mask, return_probs)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), probs


class Qwen2Model(nn.Module):
    def __init__(self, shape: Qwen2Shape):
        super().__init__()
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(shape) for _ in range(shape.num_hidden_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, shape: Qwen2Shape, qk_bias_std: float = 0.0):
        super().__init__()
        self.shape = shape
        self.model = Qwen2Model(shape)
        self.lm_head = None if shape.tie_word_embeddings else nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, shape.head_dim, 2).float() / shape.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)
        if qk_bias_std > 0:
            # Query/key biases drawn larger than the weights give every head a random positional
            # preference from the start (through the rotary embedding), instead of uniform
            # attention; heads that start near "previous token" then need not wait for a signal
            # that only arrives once a later layer can use them.
            for layer in self.model.layers:
                nn.init.normal_(layer.self_attn.q_proj.bias, std=qk_bias_std)
                nn.init.normal_(layer.self_attn.k_proj.bias, std=qk_bias_std)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, return_probs: bool = False, select=None):
        """ids [batch, length] -> logits [batch, length, vocab] (and per-layer attention
        probabilities [batch, heads, length, length] when return_probs). `select` = (rows,
        columns) index tensors computes the logits of those positions only ([count, vocab])."""
        length = ids.shape[1]
        positions = torch.arange(length, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((length, length), float("-inf")).triu(1)
        x = self.model.embed_tokens(ids)
        all_probs = []
        for layer in self.model.layers:
            x, probs = layer(x, cos, sin, mask, return_probs)
            all_probs.append(probs)
        if select is not None:
            x = x[select[0], select[1]]
        x = self.model.norm(x)
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = x @ weight.t()
        return (logits, all_probs) if return_probs else logits

    def hf_state_dict(self) -> Dict[str, torch.Tensor]:
        """Tensors under Hugging Face's names (no lm_head when tied; inv_freq is derived)."""
        return {name: tensor.detach().float().contiguous() for name, tensor in self.state_dict().items()}
