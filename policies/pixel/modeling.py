"""The pixel transformer: one forward pass from (frame views, instruction, cursor, last actions)
to every part of the next action.

Token streams (one set of transformer weights, a prefix-LM layout):

- **text**: the instruction's UTF-8 bytes. Text tokens attend only to text, so their keys and
  values at every layer depend on the instruction alone: :meth:`PixelModel.encode_text` computes
  them once per episode and each step reuses them (a per-episode KV cache).
- **step**: ``[CLS] [cursor] [history x H] [global patches] [glimpses]``; these attend to the text
  and to each other.

Heads, all read in the same pass:

- action type, button, click count, key combo, scroll notches, wait bin: classifiers on CLS;
- where: a *pointer* over the visual tokens (global patches and glimpses) plus a per-token
  offset inside that token's box, for the action point and (for drags) the end point;
- text for ``type``: start and end byte of a span copied from the instruction.

Optional parts are modules with one interface each, built from the config: a *grounding*
(:mod:`policies.pixel.grounding`: how the instruction's words are found on screen, steering the
glimpse tokens and the pointer) and *refiners* (:mod:`policies.pixel.refiners`: how a chosen
glimpse becomes a point). Each owns its layers, its inputs and its loss; ``forward`` names none
of them. Given ``labels``, ``forward`` also returns the training loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from policies.pixel.codec import LABEL_FIELDS
from policies.pixel.configuration import PixelConfig
from policies.pixel.grounding import NoGrounding, Step, TextCache, batched, build_grounding
from policies.pixel.refiners import build_refiners
from policies.pixel.vision import patch_stem, stem_input

SPAN_START = LABEL_FIELDS.index("span_start")

KIND_CLS, KIND_CURSOR, KIND_HISTORY, KIND_GLOBAL, KIND_GLIMPSE = range(5)
N_FREQ = 6
STEM_MID = 4  # the patch stem's layers up to its middle map


def fourier(x: torch.Tensor) -> torch.Tensor:
    """(..., n) values in ~[0, 1] -> (..., n * 2 * N_FREQ) sin/cos features."""
    freqs = (2.0 ** torch.arange(N_FREQ, device=x.device, dtype=x.dtype)) * math.pi
    a = x.unsqueeze(-1) * freqs
    return torch.cat([a.sin(), a.cos()], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.drop = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _out(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def text(self, x: torch.Tensor, mask: torch.Tensor):
        """Text attends to text. Returns the new states and this layer's text keys/values."""
        q, k, v = self._qkv(x)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self._out(x, a), (k, v)

    def step(self, x: torch.Tensor, text_kv, mask: torch.Tensor):
        """Step tokens attend to the text (cached keys/values) and to themselves."""
        q, k, v = self._qkv(x)
        tk, tv = text_kv
        if tk.shape[0] != k.shape[0]:
            tk, tv = tk.expand(k.shape[0], -1, -1, -1), tv.expand(k.shape[0], -1, -1, -1)
        a = F.scaled_dot_product_attention(q, torch.cat([tk, k], 2), torch.cat([tv, v], 2),
                                           attn_mask=mask[:, None, None, :])
        return self._out(x, a)



@dataclass
class PixelOutput(ModelOutput):
    type_logits: torch.Tensor | None = None
    button_logits: torch.Tensor | None = None
    count_logits: torch.Tensor | None = None
    key_logits: torch.Tensor | None = None
    scroll_logits: torch.Tensor | None = None  # (B, 2, 2*scroll_max+1): dx, dy
    wait_logits: torch.Tensor | None = None
    pointer_logits: torch.Tensor | None = None  # (B, 2, N): action point, drag end
    offsets: torch.Tensor | None = None  # (B, 2, N, 2)
    boxes: torch.Tensor | None = None  # (B, N, 4) the pointer tokens' boxes (normalised, float32)
    span_start: torch.Tensor | None = None  # (B, L)
    span_end: torch.Tensor | None = None
    # training only: what the grounding's and refiners' losses read (word_logits, snap_*, cell_*)
    aux: dict | None = None
    loss: torch.Tensor | None = None  # given labels: the sum of every head's and module's loss
    loss_parts: dict | None = None  # and each part, as floats


class PixelPreTrainedModel(PreTrainedModel):
    config_class = PixelConfig
    base_model_prefix = "pixel"
    main_input_name = "global_view"
    _no_split_modules = ["Block"]
    # a checkpoint saved before these layers loads them as zeros (what it was trained as): no report
    _keys_to_ignore_on_load_missing = [r"^span_local\.", r"^span_cond\."]

    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "zero_start", False):  # also when a checkpoint saved without it loads
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PixelModel):
            nn.init.normal_(module.global_pos, std=0.02)
            nn.init.normal_(module.cls, std=0.02)


class PixelModel(PixelPreTrainedModel):
    def __init__(self, config: PixelConfig):
        super().__init__(config)
        c = config
        d = c.hidden_size
        self.byte_emb = nn.Embedding(257, d)
        self.text_pos = nn.Embedding(c.max_text, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.screen_proj = nn.Linear(4, d)
        self.kind_emb = nn.Embedding(5, d)
        self.point_proj = nn.Linear(3 * 2 * N_FREQ + 1, d)  # cursor / history point, + present flag
        self.hist_type = nn.Embedding(len(c.action_types) + 1, d)
        self.hist_pos = nn.Embedding(c.history, d)
        self.patch_embed = nn.Linear(c.patch * c.patch * 3, d)
        self.global_pos = nn.Parameter(torch.zeros(1, c.num_global, d))
        # recent video: each past view's change from the current one, per global patch
        self.recent_proj = nn.Linear(len(c.recent) * c.patch * c.patch * 3, d) if c.recent else None
        self.stem, flat = patch_stem(c.stem_channels, c.glimpse_px)
        self.glimpse_proj = nn.Linear(flat, d)
        self.box_proj = nn.Linear(6 * 2 * N_FREQ, d)
        self.layers = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio, c.dropout) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(d)
        self.text_norm = nn.LayerNorm(d)
        n_scroll = 2 * c.scroll_max + 1
        self.head_type = nn.Linear(d, len(c.action_types))
        self.head_button = nn.Linear(d, len(c.buttons))
        self.head_count = nn.Linear(d, 3)
        self.head_key = nn.Linear(d, len(c.keys))
        self.head_scroll = nn.Linear(d, 2 * n_scroll)
        self.head_wait = nn.Linear(d, len(c.wait_bins))
        self.ptr_q = nn.Linear(d, 2 * d)
        self.ptr_k = nn.Linear(d, 2 * d)
        self.off_cond = nn.Linear(d, 2 * d)
        self.off_out = nn.Linear(d, 2)
        self.span_q = nn.Linear(d, 2 * d)
        self.span_k = nn.Linear(d, d)
        # A byte's neighbours (before, itself, after) in its span key: where a copied value starts
        # and ends (a quote, a space, a comma) is then plain to see; and the end is looked for from
        # the start. Both start at zero: a model trained without them is unchanged by them.
        self.span_local = nn.Linear(3 * d, d)
        self.span_cond = nn.Linear(d, d)
        self.grounding: NoGrounding = build_grounding(c.grounding_config, d)
        self.refiners = build_refiners(c)
        self.post_init()
        for module in (self.grounding, *self.refiners):  # each starts as the model without it
            module.init_weights()
        for module in (self.span_local, self.span_cond, self.recent_proj):
            if module is None:
                continue
            module.zero_start = True
            self._init_weights(module)

    def untie_match_kernels(self, generator: torch.Generator | None = None) -> bool:
        """See :meth:`policies.pixel.grounding.Grounding.untie_kernels`."""
        return self.grounding.untie_kernels(generator)

    # -- text -------------------------------------------------------------------------------
    def encode_text(self, text_ids: torch.Tensor, pos_shift: torch.Tensor | None = None) -> TextCache:
        """(B, L) byte ids (256 = pad) -> per-layer keys/values and final states.

        Trailing columns that are padding in every row are dropped first: every row masks them
        out, so the outputs are identical, and instructions are much shorter than ``max_text``
        (this halves a training step's work and shortens every inference step's attention).
        ``pos_shift`` (B,) (training only): each row's bytes take the positions ``shift..`` instead
        of ``0..`` (bounded so the instruction still fits ``max_text``), so where a word sits in
        the text window teaches nothing and what the words are, and their order, does."""
        mask = text_ids != 256
        n = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 1
        text_ids, mask = text_ids[:, :n], mask[:, :n].clone()
        mask[:, 0] = True  # an empty instruction still has one (pad) key to attend to
        pos = torch.arange(text_ids.shape[1], device=text_ids.device)[None]
        if pos_shift is not None:
            room = self.config.max_text - mask.sum(1)
            pos = (pos + torch.minimum(pos_shift.to(pos.device), room).clamp(min=0)[:, None]).clamp(
                max=self.config.max_text - 1)  # padding columns past the window share its last place
        emb = self.byte_emb(F.pad(text_ids, (1, 1), value=256))
        x = emb[:, 1:-1] + self.text_pos(pos)
        kv = []
        for layer in self.layers:
            x, lkv = layer.text(x, mask)
            kv.append(lkv)
        states = self.text_norm(x)
        span_keys = self.span_k(states) + self.span_local(torch.cat([emb[:, :-2], emb[:, 1:-1], emb[:, 2:]], -1))
        cache = TextCache(kv, states, span_keys, mask)
        self.grounding.text(cache, text_ids)
        return cache

    # -- step -------------------------------------------------------------------------------
    def _point(self, xy: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(..., 2) points and (...,) presence -> features (..., 3*2*N_FREQ+1)."""
        feats = torch.cat([xy, (xy[..., :1] - xy[..., 1:2]) * 0.5 + 0.5], -1)
        f = fourier(feats) * present.unsqueeze(-1)
        return torch.cat([f, present.unsqueeze(-1)], -1)

    def _boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        cx = (boxes[..., 0:1] + boxes[..., 2:3]) * 0.5
        cy = (boxes[..., 1:2] + boxes[..., 3:4]) * 0.5
        return self.box_proj(fourier(torch.cat([boxes, cx, cy], -1)))

    def global_boxes(self, batch: int, device, dtype) -> torch.Tensor:
        c = self.config
        nx, ny = c.global_w // c.patch, c.global_h // c.patch
        ys, xs = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
        xs, ys = xs.flatten().to(dtype), ys.flatten().to(dtype)
        b = torch.stack([xs / nx, ys / ny, (xs + 1) / nx, (ys + 1) / ny], -1)
        return b[None].expand(batch, -1, -1)

    def forward(
        self,
        global_view: torch.Tensor,  # (B, GH, GW, 3) uint8
        glimpses: torch.Tensor,  # (B, K, G, G, 3) uint8
        boxes: torch.Tensor,  # (B, K, 4) float
        glimpse_mask: torch.Tensor,  # (B, K) bool
        screen: torch.Tensor,  # (B, 4)
        cursor: torch.Tensor,  # (B, 3): x, y, present
        history_types: torch.Tensor,  # (B, H) long, len(action_types) = none
        history_points: torch.Tensor,  # (B, H, 3): x, y, present
        text_ids: torch.Tensor | None = None,  # (B, L) long
        text_cache: TextCache | None = None,
        text_pos_shift: torch.Tensor | None = None,  # (B,) long, training only: see encode_text
        recent: torch.Tensor | None = None,  # (B, R, GH, GW, 3) uint8: past global views (config.recent)
        labels: torch.Tensor | None = None,  # (B, len(LABEL_FIELDS)) long, -1 = none: training
        target_offsets: torch.Tensor | None = None,  # (B, 2, 2) the labelled points' offsets in their boxes
        **inputs: torch.Tensor,  # the grounding's (its step_inputs or run_inputs)
    ) -> PixelOutput:
        c = self.config
        if text_cache is None:
            if text_ids is None:
                raise ValueError("give text_ids or text_cache")
            text_cache = self.encode_text(text_ids, text_pos_shift)
        dtype = self.cls.dtype
        b = global_view.shape[0]
        d = c.hidden_size
        kind = self.kind_emb.weight
        # CLS (+ screen geometry)
        tok_cls = self.cls.expand(b, -1, -1) + self.screen_proj(screen.to(dtype))[:, None] + kind[KIND_CLS]
        # cursor
        cur = self._point(cursor[:, :2].to(dtype), cursor[:, 2].to(dtype))
        tok_cur = self.point_proj(cur)[:, None] + kind[KIND_CURSOR]
        # history
        hp = self._point(history_points[..., :2].to(dtype), history_points[..., 2].to(dtype))
        tok_hist = (self.point_proj(hp) + self.hist_type(history_types) + self.hist_pos.weight[None]
                    + kind[KIND_HISTORY])
        # global view patches
        p = c.patch
        gv = global_view.to(dtype) * (1.0 / 255.0) - 0.5
        gh, gw = c.global_h // p, c.global_w // p
        gv = gv.view(b, gh, p, gw, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, p * p * 3)
        gboxes = self.global_boxes(b, gv.device, torch.float32)
        tok_glob = self.patch_embed(gv) + self.global_pos + self._boxes(gboxes.to(dtype)) + kind[KIND_GLOBAL]
        if self.recent_proj is not None:
            if recent is None:
                raise ValueError(f"this model sees recent video (recent={c.recent}): give recent")
            r = recent.shape[1]
            past = recent.to(dtype) * (1.0 / 255.0) - 0.5
            past = past.view(b, r, gh, p, gw, p, 3).permute(0, 2, 4, 1, 3, 5, 6).reshape(b, gh * gw, r, p * p * 3)
            tok_glob = tok_glob + self.recent_proj((past - gv[:, :, None]).flatten(2))
        # glimpses: the stem's middle map is kept for refiners that choose among its cells
        k = glimpses.shape[1]
        gl_in = stem_input(glimpses.reshape(b * k, c.glimpse_px, c.glimpse_px, 3), dtype)
        mid = self.stem[:STEM_MID](gl_in)
        gl = self.stem[STEM_MID:](mid).flatten(1)
        boxes = boxes.float()  # pointer boxes stay float32: a bf16 box edge can be off by pixels
        tok_gl = self.glimpse_proj(gl).view(b, k, d) + self._boxes(boxes.to(dtype)) + kind[KIND_GLIMPSE]
        step = Step(b=b, k=k, n_global=gh * gw, dtype=dtype, text=text_cache, boxes=boxes,
                    glimpse_mask=glimpse_mask, stem_in=gl_in, stem_mid=mid, inputs=dict(inputs))
        tok_gl = self.grounding.glimpse_tokens(step, tok_gl)
        x = torch.cat([tok_cls, tok_cur, tok_hist, tok_glob, tok_gl], 1)
        n_fixed = 2 + c.history + gh * gw
        vis_mask = torch.cat([torch.ones(b, n_fixed, dtype=torch.bool, device=x.device), glimpse_mask.bool()], 1)
        tmask = batched(text_cache.mask, b)
        mask = torch.cat([tmask, vis_mask], 1)
        for layer, kv in zip(self.layers, text_cache.kv, strict=True):
            x = layer.step(x, kv, mask)
        x = self.norm(x)
        h = self.grounding.state(step, x[:, 0])
        vis = x[:, 2 + c.history:]  # pointer candidates: global patches then glimpses
        ptr_boxes = torch.cat([gboxes, boxes], 1)
        pmask = vis_mask[:, 2 + c.history:]
        q = self.ptr_q(h).view(b, 2, d)
        kk = self.ptr_k(vis).view(b, -1, 2, d)
        scale = 1.0 / math.sqrt(d)
        ptr = torch.einsum("bjd,bnjd->bjn", q, kk) * scale
        ptr = self.grounding.pointer(step, h, ptr)
        ptr = ptr.masked_fill(~pmask[:, None, :], -1e4)
        cond = self.off_cond(h).view(b, 2, 1, d)
        off_in = vis[:, None] + cond
        for refiner in self.refiners:
            off_in = refiner.offset_input(step, off_in)
        hidden = F.gelu(off_in)
        offsets = self.off_out(hidden)  # (B, 2, N, 2)
        for refiner in self.refiners:
            offsets = refiner.refine(step, h, hidden, offsets)
        sq = self.span_q(h).view(b, 2, d)
        sk = batched(text_cache.span_keys, b)
        span_start = (torch.einsum("bd,bld->bl", sq[:, 0], sk) * scale).masked_fill(~tmask, -1e4)
        # the end is looked for from the start: the labelled one in training, else the likeliest
        start = (labels[:, SPAN_START].clamp(min=0) if labels is not None else span_start.argmax(-1))
        start_state = batched(text_cache.states, b).gather(1, start[:, None, None].expand(-1, 1, d))[:, 0]
        end_q = sq[:, 1] + self.span_cond(start_state)
        span_end = (torch.einsum("bd,bld->bl", end_q, sk) * scale).masked_fill(~tmask, -1e4)
        out = PixelOutput(
            type_logits=self.head_type(h),
            button_logits=self.head_button(h),
            count_logits=self.head_count(h),
            key_logits=self.head_key(h),
            scroll_logits=self.head_scroll(h).view(b, 2, -1),
            wait_logits=self.head_wait(h),
            pointer_logits=ptr,
            offsets=offsets,
            boxes=ptr_boxes,
            span_start=span_start,
            span_end=span_end,
            aux=step.aux if self.training else None,
        )
        if labels is not None:
            out.aux = step.aux
            out.loss, out.loss_parts = self.loss(out, labels, target_offsets)
        return out

    def loss(self, out: PixelOutput, labels: torch.Tensor, target_offsets: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The heads' losses (labels of -1 are ignored) plus the grounding's and each refiner's."""
        lab = {k: labels[:, i] for i, k in enumerate(LABEL_FIELDS)}
        parts: dict[str, torch.Tensor] = {}

        def ce(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
            if (target >= 0).any():
                parts[name] = F.cross_entropy(logits.float(), target, ignore_index=-1)

        ce("type", out.type_logits, lab["type"])
        ce("button", out.button_logits, lab["button"])
        ce("count", out.count_logits, lab["count"])
        ce("key", out.key_logits, lab["key"])
        ce("scroll", out.scroll_logits.flatten(0, 1), torch.stack([lab["scroll_x"], lab["scroll_y"]], 1).flatten())
        ce("wait", out.wait_logits, lab["wait"])
        ce("span", torch.cat([out.span_start, out.span_end]), torch.cat([lab["span_start"], lab["span_end"]]))
        off_terms = []
        for j in range(2):
            tgt = lab[f"ptr{j}"]
            ce(f"ptr{j}", out.pointer_logits[:, j], tgt)
            valid = tgt >= 0
            if valid.any():
                idx = tgt.clamp(min=0)
                pred = out.offsets[:, j].gather(1, idx[:, None, None].expand(-1, 1, 2))[:, 0]  # (B, 2)
                off_terms.append(F.smooth_l1_loss(pred[valid].float(), target_offsets[valid, j].float(), beta=0.01,
                                                  reduction="sum") / max(1, int(valid.sum())))
        if off_terms:
            parts["offset"] = 8.0 * sum(off_terms)  # ~1-point precision matters (sliders)
        for module in (self.grounding, *self.refiners):
            parts.update(module.loss(out, lab, target_offsets))
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}
