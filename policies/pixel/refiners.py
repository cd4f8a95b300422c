"""Point refiners: how the glimpse a pointer chose becomes a point in it.

The core model's offset head reads each glimpse token (conditioned on the state) and gives a
point in the glimpse's box. Refiners, applied in the config's order, each own their layers and
their loss:

- :class:`WhereRefiner`: the offset head also learns which of a glimpse's read windows held the
  pointer's word (a tile holds two rows: which one); ``near``: an offset per read window, chosen
  by where the glimpse or its neighbours read the word (a field's row is its label's);
- :class:`SnapRefiner`: the offset may move to where the pointer's word's drawing matched (a
  template grounding), by learned amounts: a row's click lands on that row, a link's on its word;
- :class:`CellRefiner`: the pointer chooses one of the glimpse's 6x6 middle cells and a point in
  it, and learns when that point beats the offset head's (a radio button named by its kind).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from policies.pixel.codec import NO_WORD
from policies.pixel.configuration import PixelConfig, RefinerConfig
from policies.pixel.grounding import READS, Step

WHERE_SHARPNESS = 8.0  # where near: a read at 1.0 beside ones at 0.15 takes ~0.9 of the choice
SNAP_HIDDEN = 32  # snap: the width of the layer that weighs each window's placement
SNAP_SHARPNESS = 8.0  # snap: a placement's score, 0..1, times this is its choice logit to start with
SNAP_OUTSIDE = 40.0  # snap: a placement's distance outside a glimpse (screen units) counts this much against it
SNAP_ROW = 0.03  # snap loss: a placement this close to the click in y (screen units) is on its row,
SNAP_REACH = 0.25  # this close in x beside it (a label right of its radio button, a link's own word),
SNAP_FLOOR = 0.3  # and it matched the word at least this well
SNAP_SAME_X = 0.03  # the click is on the word itself (the move takes its x too) within this in x
CELL_DIM = 64  # cells: the width in which a pointer's query meets each cell's features
CELL_SURE = 0.5  # cells: a cell chosen with less probability than this never moves a point
CELL_CONV = 48  # cells: channels of the cells' own encoder (beside the stem's middle map)


class Refiner(nn.Module):
    """A point refiner: it may add to the offset head's input, then move its points."""

    def offset_input(self, step: Step, off_in: torch.Tensor) -> torch.Tensor:
        return off_in

    def refine(self, step: Step, h: torch.Tensor, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``offsets`` (B, 2, N, 2) per pointer and candidate -> refined; ``hidden`` (B, 2, N, d) the
        offset head's hidden state."""
        return offsets

    def init_weights(self) -> None:
        pass

    def loss(self, out, labels: dict[str, torch.Tensor], target_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}


class WhereRefiner(Refiner):
    def __init__(self, r: RefinerConfig, c: PixelConfig):
        super().__init__()
        self.near = r.near
        reads = READS
        self.inp = nn.Linear(reads, c.hidden_size)  # each read's match of the pointer's word
        if r.near:  # an offset correction per read window, chosen by where the word was read
            self.off = nn.Linear(c.hidden_size, 2 * reads)

    @torch.no_grad()
    def init_weights(self) -> None:  # starts as the model without it
        nn.init.zeros_(self.inp.weight)
        nn.init.zeros_(self.inp.bias)
        if self.near:
            nn.init.zeros_(self.off.weight)
            nn.init.zeros_(self.off.bias)

    def offset_input(self, step: Step, off_in: torch.Tensor) -> torch.Tensor:
        return off_in + F.pad(self.inp(step.where().to(step.dtype)), (0, 0, step.n_global, 0))

    def refine(self, step: Step, h: torch.Tensor, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if not self.near:
            return offsets
        # one offset per read window, chosen by where this glimpse or the ones around it (a field's
        # label, left of it) read the word: two rows in a tile, not their middle
        where = step.where()
        pull = step.reach.detach().clamp(min=0)  # the kernel stays the pointer's; where its words count,
        pull = pull / pull.sum(-1, keepdim=True).clamp(min=1e-6)  # as a mean: one scale at any distance
        near = torch.einsum("bpkj,bpjr->bpkr", pull, where)
        choice = ((where + near) * WHERE_SHARPNESS).softmax(-1)  # (B, 2, K, R)
        delta = self.off(hidden[:, :, step.n_global:]).view(*choice.shape, 2)
        return offsets + F.pad((choice[..., None].to(delta.dtype) * delta).sum(3), (0, 0, step.n_global, 0))


class SnapRefiner(Refiner):
    def __init__(self, r: RefinerConfig, c: PixelConfig):
        super().__init__()
        d = c.hidden_size
        self.inp = nn.Linear(3, SNAP_HIDDEN)  # a window's placement on the screen and its score
        self.state = nn.Linear(d, 2 * SNAP_HIDDEN)  # per pointer and state
        self.out = nn.Linear(SNAP_HIDDEN, 1)  # -> that window's choice logit, beside its score's
        self.conf = nn.Linear(1, 1)  # the chosen placement's score -> how far to trust it
        self.gate = nn.Linear(d, 4)  # per pointer and axis: how far the offset moves there
        self.shift = nn.Linear(d, 4)  # and where beside the word it lands (a radio left of its label)

    @torch.no_grad()
    def init_weights(self) -> None:  # windows chosen by score; a full match moves an offset half way
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        nn.init.constant_(self.conf.weight, 10.0)  # a true label's 0.4 goes most of the way,
        nn.init.constant_(self.conf.bias, -2.0)  # a stray 0.1 a quarter
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def refine(self, step: Step, h: torch.Tensor, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Each glimpse's offset, per pointer, moved toward where that pointer's word matched on the
        screen. Every read window's placement of the word is a candidate; a glimpse chooses among
        them by score, by where on the screen the placement lies (learned: an instruction bar's
        copy of the word is never the target) and by how far it lies outside the glimpse (a label
        centred just across a tile's edge still names the row in it). The move is a learned
        function of the chosen placement's score times a learned fraction per pointer, axis and
        state (a click beside a label keeps its own x), to the placement plus a learned shift.
        In training, the choices and moves go to ``aux`` for :meth:`loss`."""
        match_pos = step.inputs.get("match_pos")
        if match_pos is None:
            raise ValueError("the snap refiner needs match_pos (policies.pixel.templates)")
        where, word_p, boxes, glimpse_mask = step.where(), step.word_p, step.boxes, step.glimpse_mask
        n_global = step.n_global
        b, r = where.shape[0], where.shape[3]
        pos = match_pos.float()[..., :word_p.shape[-1], :]
        at = torch.einsum("bjl,bkrlc->bjkrc", word_p, pos)  # (B, 2, K, R, 2) in the window's glimpse
        lo, hi = boxes[..., :2].float(), boxes[..., 2:].float()  # (B, K, 2)
        spot = (lo[:, None, :, None] + at * (hi - lo)[:, None, :, None]).flatten(2, 3)  # (B, 2, K*R, 2) on screen
        score = where.flatten(2)  # (B, 2, K*R)
        dt = self.inp.weight.dtype
        hid = self.inp(torch.cat([spot, score[..., None]], -1).to(dt)).float()
        hid = hid + self.state(h).float().view(b, 2, 1, -1)
        z = SNAP_SHARPNESS * score + self.out(F.gelu(hid).to(dt)).float()[..., 0]  # per candidate
        z = z.masked_fill(~glimpse_mask.bool().repeat_interleave(r, 1)[:, None], -1e4)
        # how far each candidate lies outside each glimpse (screen units): (B, 2, K, K*R)
        out = (F.relu(lo[:, None, :, None] - spot[:, :, None]) + F.relu(spot[:, :, None] - hi[:, None, :, None])).sum(-1)
        z = z[:, :, None] - SNAP_OUTSIDE * out
        if self.training:
            w = z.softmax(-1)
        else:  # one placement: two that each half-match would put the click between them
            w = (z == z.amax(-1, keepdim=True)).float()  # (ties share; no one_hot: its depth would be traced)
            w = w / w.sum(-1, keepdim=True)
        chosen = (torch.einsum("bjkn,bjnc->bjkc", w, spot) - lo[:, None]) / (hi - lo).clamp(min=1e-6)[:, None]
        chosen_score = torch.einsum("bjkn,bjn->bjk", w, score)[..., None]  # (B, 2, K, 1)
        conf = torch.sigmoid(self.conf(chosen_score.to(dt)).float())  # how far that score warrants
        alpha = conf * torch.sigmoid(self.gate(h).float()).view(b, 2, 1, 2)
        goal = (chosen + self.shift(h).float().view(b, 2, 1, 2)).clamp(0, 1)  # a point in the glimpse
        gl = offsets[:, :, n_global:].float()
        moved = gl + alpha * (goal - gl)
        step.placed = alpha.amax(-1)  # how far a word moved each point
        step.aux.update({"snap_logits": z, "snap_spots": spot, "snap_scores": score, "snap_alpha": alpha})
        return torch.cat([offsets[:, :, :n_global], moved.to(offsets.dtype)], 2)

    def loss(self, out, labels: dict[str, torch.Tensor], target_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the first pointer learns from demos that name their targets' words, at the glimpse
        the demo points into:

        - ``snap_choice``: the best-matching placement of the word on the click's row (beside it,
          not the instruction bar's copy) wins the glimpse's choice;
        - ``snap_gate``: the move goes all the way where there is one (in x only if the click is on
          the word itself), and nowhere where there is none or no word names the target.

        Without these the choice learns only through the point error, times a move that starts
        small: the two shrink together (measured: docs/research)."""
        aux = out.aux
        tgt, word = labels["ptr0"], labels["word"]
        k = aux["snap_logits"].shape[2]
        g = tgt - (out.offsets.shape[2] - k)  # the glimpse pointed into
        use = (g >= 0) & ((word >= 0) | (word == NO_WORD))
        if not use.any():
            return {}
        i, gi = torch.arange(len(tgt)), g.clamp(min=0)
        box = out.boxes[i, tgt.clamp(min=0)].float()
        click = box[:, :2] + target_offsets[:, 0] * (box[:, 2:] - box[:, :2])  # (B, 2) screen units
        spot, score = aux["snap_spots"][:, 0].float(), aux["snap_scores"][:, 0].float()  # (B, C, 2), (B, C)
        d = (spot - click[:, None]).abs()
        near = (d[..., 1] < SNAP_ROW) & (d[..., 0] < SNAP_REACH) & (score >= SNAP_FLOOR) & (word >= 0)[:, None]
        best = score.masked_fill(~near, -1.0).argmax(-1)
        has = near.any(-1) & use
        at = spot[i, best]  # (B, 2)
        pos = near & ((spot - at[:, None]).abs() < 0.01).all(-1)  # the best one and its copies in overlapping windows
        parts = {}
        if has.any():
            z = aux["snap_logits"][i, 0, gi].float()  # (B, C)
            nll = z.logsumexp(-1) - z.masked_fill(~pos, -1e4).logsumexp(-1)
            parts["snap_choice"] = nll[has].mean()
        alpha = aux["snap_alpha"][i, 0, gi].float()  # (B, 2)
        same_x = (at[:, 0] - click[:, 0]).abs() < SNAP_SAME_X
        want = torch.stack([has & same_x, has], -1).float()
        parts["snap_gate"] = F.binary_cross_entropy(alpha[use].clamp(1e-4, 1 - 1e-4), want[use])
        return parts


class CellRefiner(Refiner):
    def __init__(self, r: RefinerConfig, c: PixelConfig):
        super().__init__()
        d = c.hidden_size
        side = math.ceil((c.glimpse_px // 4) / 2)  # the patch stem's middle map: 6x6 for 48 pixels
        # the cells' own encoder, the middle map's shape: the stem's map is trained for the glimpse's
        # summary, this one for telling a radio button from a checkbox a cell away
        # (a first layer at two pixels, not four: a radio button's circle from a checkbox's square)
        self.conv = nn.Sequential(nn.Conv2d(3, CELL_CONV // 3, 4, 2, 1), nn.GELU(),
                                  nn.Conv2d(CELL_CONV // 3, CELL_CONV, 4, 4), nn.GELU())
        self.k = nn.Linear(2 * c.stem_channels + CELL_CONV, CELL_DIM)
        self.q = nn.Linear(d, CELL_DIM)
        self.pos = nn.Parameter(torch.zeros(side * side, CELL_DIM))
        self.fine = nn.Linear(CELL_DIM, 2)
        self.trust = nn.Linear(d + 1, 1)  # whether the cell's point beats the offset head's, per glimpse

    @torch.no_grad()
    def init_weights(self) -> None:  # choices start near uniform (never sure: no point moves)
        nn.init.normal_(self.pos, std=0.02)
        for layer in self.conv:  # trained from scratch: PyTorch's own scale, not 0.02
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        nn.init.zeros_(self.fine.weight)
        nn.init.zeros_(self.fine.bias)
        nn.init.zeros_(self.trust.weight)  # untrusted to start with: the model acts as before
        nn.init.constant_(self.trust.bias, -4.0)

    def refine(self, step: Step, h: torch.Tensor, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Each pointer's query (from its offset head's hidden state per glimpse) meets each cell of
        the glimpse's middle map and the cells' own encoder's, and chooses one, with a learned point
        in it. One cell is taken (ties share), never a blend. Where the offset head's point lies
        more than half a cell outside the chosen cell on an axis, that axis may take the cell's
        point; whether it does is learned (``trust``, from the hidden state and how sure the choice
        is), a choice less sure than ``CELL_SURE`` never moves, and where a word placed the point
        (the snap moved it at least half way) the word decides."""
        n_global = step.n_global
        mid = torch.cat([step.stem_mid, self.conv(step.stem_in)], 1)
        hidden = hidden[:, :, n_global:]
        b, _, k, _ = hidden.shape
        s = mid.shape[-1]
        dt = self.k.weight.dtype
        keys = self.k(mid.flatten(2).transpose(1, 2).to(dt)).view(b, k, s * s, -1) + self.pos.to(dt)
        q = self.q(hidden.to(dt))  # (B, 2, K, CELL_DIM)
        logits = torch.einsum("bjkc,bknc->bjkn", q.float(), keys.float()) / math.sqrt(CELL_DIM)
        fine = torch.sigmoid(self.fine(F.gelu(keys[:, None] + q[:, :, :, None])).float())  # (B, 2, K, S*S, 2)
        n = torch.arange(s * s, device=mid.device)
        lo = torch.stack([n % s, n // s], -1).float() / s  # each cell's top-left, as a glimpse offset
        points = lo + fine / s
        p = logits.softmax(-1)
        best = p.amax(-1, keepdim=True)
        pick = (p == best).float()
        pick = pick / pick.sum(-1, keepdim=True)
        at = torch.einsum("bjkn,bjknc->bjkc", pick, points)
        cell_lo = torch.einsum("bjkn,nc->bjkc", pick, lo)
        base = offsets[:, :, n_global:].float()
        margin = 0.5 / s
        outside = (base < cell_lo - margin) | (base > cell_lo + (1.0 + 0.5) / s)
        trust = self.trust(torch.cat([hidden.to(dt), best.to(dt)], -1)).float()  # (B, 2, K, 1)
        take = (trust > 0) & (best >= CELL_SURE)
        if step.placed is not None:
            take = take & (step.placed.float() < 0.5)[..., None]
        candidate = torch.where(outside, at, base)  # the point if the cell is trusted
        moved = torch.where(take, candidate, base)
        step.aux.update({"cell_logits": logits, "cell_points": points, "cell_trust": trust[..., 0],
                         "cell_base": base, "cell_moved": candidate})
        return torch.cat([offsets[:, :, :n_global], moved.to(offsets.dtype)], 2)

    def loss(self, out, labels: dict[str, torch.Tensor], target_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """At the glimpse each demo points into: ``cell``, a cross-entropy choosing the cell that holds
        the demo's point; ``cell_fine``, that cell's point onto the demo's (weighted as the offsets);
        and ``cell_trust``, whether the move the chosen cell makes brings the point nearer the
        demo's, where it makes one."""
        aux = out.aux
        k, cells = aux["cell_logits"].shape[2], aux["cell_logits"].shape[3]
        s = math.isqrt(cells)
        n_global = out.pointer_logits.shape[-1] - k
        ce, fine, trust = [], [], []
        for j in range(2):
            tgt = labels[f"ptr{j}"]
            i = (tgt >= n_global).nonzero()[:, 0]  # samples pointing into a glimpse
            if not len(i):
                continue
            g, o = tgt[i] - n_global, target_offsets[i, j].float()
            cell = (o[:, 1] * s).long().clamp(0, s - 1) * s + (o[:, 0] * s).long().clamp(0, s - 1)
            ce.append(F.cross_entropy(aux["cell_logits"][i, j, g].float(), cell))
            fine.append(F.smooth_l1_loss(aux["cell_points"][i, j, g, cell].float(), o, beta=0.01))
            base, moved = aux["cell_base"][i, j, g].detach().float(), aux["cell_moved"][i, j, g].detach().float()
            moves = (moved != base).any(-1)
            if moves.any():
                better = ((moved - o).abs().sum(-1) < (base - o).abs().sum(-1)).float()
                trust.append(F.binary_cross_entropy_with_logits(aux["cell_trust"][i, j, g][moves].float(),
                                                                better[moves]))
        if not ce:
            return {}
        parts = {"cell": sum(ce) / len(ce), "cell_fine": 8.0 * sum(fine) / len(fine)}
        if trust:
            parts["cell_trust"] = sum(trust) / len(trust)
        return parts


REFINER_CLASSES = {"where": WhereRefiner, "snap": SnapRefiner, "cells": CellRefiner}


def build_refiners(c: PixelConfig) -> nn.ModuleList:
    return nn.ModuleList(REFINER_CLASSES[r.kind](r, c) for r in c.refiner_configs)
