"""Beam search for a prefix-conditioned GPT-2, the same search as Hugging Face's ``generate`` at a
fraction of its cost.

Why: on a CPU a report's time is the decoder's step loop, and a real film has many selected regions,
each searched with 4 beams. ``transformers``' beam search keeps every study row in the batch until the
last one is done, grows its key/value cache by concatenation at every step and rebuilds masks and
output objects per step; on a real NIH film that is 1-3 s of a 2-4 s report. Here the same search
(the same candidates, scores, length normalisation, early-stopping heuristic and tie order as
``transformers`` 5's vectorised ``_beam_search`` with ``early_stopping=False``) runs on the model's
own layers with a preallocated cache, and a batch item leaves the batch as soon as its finished
hypotheses can no longer change.

The texts are the ones ``generate`` writes: every operation on a row is the operation ``generate``
does on it (the same modules, ``scaled_dot_product_attention`` with the same arguments). What can
differ is only how a matrix product sums when the batch has fewer rows: on a CPU the product of a row
does not depend on how many rows are beside it once there are at least :data:`MIN_ROWS` (checked
for these layer shapes; a tiny batch can take a different kernel), so the batch never shrinks below
that, nor at all when ``generate`` itself would have run fewer rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Fewest rows a shrinking batch keeps (see the module docstring; 11 sufficed on the 2-core Xeon this was
# measured on, 16 leaves room for other kernels); a batch that starts below it stays whole.
MIN_ROWS = 16
_NEG = -1.0e9  # transformers' "impossible" score


def supported(gpt2, *, num_beams: int, do_sample: bool) -> bool:
    """Whether :func:`beam_search` reproduces ``gpt2.generate`` for these options: a deterministic beam
    search of a stock GPT-2 with no logits processors (the generation config sets none)."""
    cfg, gen = gpt2.config, gpt2.generation_config
    return (num_beams > 1 and not do_sample and type(gpt2).__name__ == "GPT2LMHeadModel"
            and cfg.model_type == "gpt2" and not cfg.add_cross_attention and not cfg.scale_attn_by_inverse_layer_idx
            and not cfg.reorder_and_upcast_attn and cfg._attn_implementation == "sdpa"
            and (gen.length_penalty in (None, 1.0)) and not gen.early_stopping
            and not (gen.repetition_penalty not in (None, 1.0) or gen.no_repeat_ngram_size or gen.min_length
                     or gen.min_new_tokens or gen.bad_words_ids or gen.forced_eos_token_id or gen.forced_bos_token_id
                     or gen.suppress_tokens or gen.begin_suppress_tokens or gen.sequence_bias)
            and not gpt2.training)


class _Cache:
    """Keys and values of every layer, (rows, heads, length, head_dim) each, grown and reordered as
    ``transformers``' DynamicCache grows and reorders them (so attention reads the same tensors)."""

    def __init__(self, layers: int):
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers
        self.length = 0

    def add(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        old = self.kv[layer]
        if old is not None:
            keys, values = torch.cat([old[0], keys], dim=-2), torch.cat([old[1], values], dim=-2)
        self.kv[layer] = (keys, values)
        return keys, values

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder to) ``rows``: the beams each next step continues."""
        self.kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.kv]


def _forward(gpt2, embeds: torch.Tensor, cache: _Cache) -> torch.Tensor:
    """The transformer on new positions ``embeds`` (rows, T, E) after ``cache.length`` cached ones: the
    final hidden state of the last position (rows, E)."""
    t = gpt2.transformer
    steps = embeds.shape[1]
    positions = torch.arange(steps, device=embeds.device) + cache.length
    hidden = embeds + t.wpe(positions.unsqueeze(0))
    for i, block in enumerate(t.h):
        attn = block.attn
        residual = hidden
        q, k, v = attn.c_attn(block.ln_1(hidden)).split(attn.split_size, dim=2)
        shape = (*q.shape[:-1], -1, attn.head_dim)
        q, k, v = (x.view(shape).transpose(1, 2) for x in (q, k, v))
        if cache.kv[i] is None:  # transformers' cache stores the first keys by concatenation too
            empty = torch.tensor([], dtype=k.dtype, device=k.device)
            k, v = torch.cat([empty, k], dim=-2), torch.cat([empty, v], dim=-2)
        k, v = cache.add(i, k, v)
        # the prompt attends causally to itself; a new token to everything (no mask, as transformers calls sdpa)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=attn.scaling,
                                             is_causal=steps > 1)
        out = out.transpose(1, 2).contiguous()
        out = out.reshape(*out.shape[:-2], -1).contiguous()
        hidden = attn.c_proj(out) + residual
        hidden = block.mlp(block.ln_2(hidden)) + hidden
    cache.length += steps
    return t.ln_f(hidden)[:, -1]


@torch.no_grad()
def beam_search(gpt2, embeds: torch.Tensor, *, num_beams: int, num_return_sequences: int, max_new_tokens: int,
                eos_token_id: int, pad_token_id: int | None) -> torch.Tensor:
    """Token ids (B * num_return_sequences, T) as ``gpt2.generate(inputs_embeds=embeds, num_beams=...,
    num_return_sequences=..., max_new_tokens=...)`` returns them (the prompt is not part of them; rows
    end with EOS and are filled with ``pad_token_id or eos_token_id``)."""
    if num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be at most num_beams ({num_beams})")
    device = embeds.device
    batch, nb = embeds.shape[0], num_beams
    max_len = max_new_tokens
    fill = pad_token_id or eos_token_id
    keep = 2 * nb  # transformers: max(2, 1 + number of EOS tokens) * num_beams candidates per step
    top_mask = torch.cat([torch.ones(nb, dtype=torch.bool), torch.zeros(keep - nb, dtype=torch.bool)]).to(device)

    # the prompt, once per study row when that keeps the products row-exact, then one copy per beam
    rows = batch * nb
    shared_prompt = batch * embeds.shape[1] >= MIN_ROWS
    prompt = embeds if shared_prompt else embeds.repeat_interleave(nb, 0)
    cache = _Cache(len(gpt2.transformer.h))
    last = _forward(gpt2, prompt, cache)
    if shared_prompt:
        expand = torch.arange(batch, device=device).repeat_interleave(nb)
        cache.select(expand)
        last = last[expand]
    shrink = rows >= MIN_ROWS  # a batch that starts small stays whole (see the module docstring)

    # per active study: running beams and finished hypotheses, as transformers keeps them
    active = torch.arange(batch, device=device)  # which study each active item is
    running = torch.full((batch, nb, max_len), fill, dtype=torch.long, device=device)
    running_scores = torch.zeros((batch, nb), device=device)
    running_scores[:, 1:] = _NEG
    finished = running.clone()
    scores = torch.full((batch, nb), _NEG, device=device)
    is_finished = torch.zeros((batch, nb), dtype=torch.bool, device=device)
    improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)
    out = torch.full((batch, nb, max_len), fill, dtype=torch.long, device=device)

    for cur in range(max_len):
        n = active.shape[0]
        logits = gpt2.lm_head(last).float()
        log_probs = F.log_softmax(logits, dim=-1).view(n, nb, -1) + running_scores[:, :, None]
        vocab = log_probs.shape[-1]
        top_scores, top_idx = torch.topk(log_probs.reshape(n, -1), k=keep)
        top_beam = top_idx // vocab
        top_ids = top_idx % vocab
        top_seq = torch.take_along_dim(running, top_beam[:, :, None], dim=1)
        top_seq[:, :, cur] = top_ids
        done_now = top_ids == eos_token_id
        if cur + 1 >= max_len:
            done_now = torch.ones_like(done_now)

        # the best unfinished continuations run on
        run_scores = top_scores + done_now.to(torch.float32) * _NEG
        nxt = torch.topk(run_scores, k=nb)[1]
        running = torch.take_along_dim(top_seq, nxt[:, :, None], dim=1)
        running_scores = torch.take_along_dim(run_scores, nxt, dim=1)
        parents = torch.take_along_dim(top_beam, nxt, dim=1)

        # the finished ones among the top num_beams join the hypotheses if they beat them
        just = done_now & top_mask[None, :]
        cand = top_scores / float(cur + 1)
        cand = cand + (~improvable).to(torch.float32) * _NEG
        cand = cand + (~just) * _NEG
        merged_scores = torch.cat((scores, cand), dim=1)
        best = torch.topk(merged_scores, k=nb)[1]
        finished = torch.take_along_dim(torch.cat((finished, top_seq), dim=1), best[:, :, None], dim=1)
        scores = torch.take_along_dim(merged_scores, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat((is_finished, just), dim=1), best, dim=1)
        # the early-stopping heuristic (length_penalty 1, early_stopping False)
        best_possible = running_scores[:, :1] / float(cur + 1)
        worst = torch.where(is_finished, torch.min(scores, dim=1, keepdim=True)[0], _NEG)
        improvable = improvable & torch.any(best_possible > worst, dim=-1, keepdim=True)
        if cur + 1 >= max_len or not bool(improvable.any()):
            out[active] = finished
            break

        # items that are done leave the batch (never below MIN_ROWS rows, see the module docstring)
        kept = torch.arange(n, device=device)
        stay = improvable[:, 0].clone()
        if shrink and not bool(stay.all()):
            for j in torch.nonzero(~stay).flatten().tolist():  # done items kept to stay at MIN_ROWS rows
                if int(stay.sum()) * nb >= MIN_ROWS:
                    break
                stay[j] = True
            if not bool(stay.all()):
                leaving = torch.nonzero(~stay).flatten()
                out[active[leaving]] = finished[leaving]
                kept = torch.nonzero(stay).flatten()
                active, running, running_scores = active[kept], running[kept], running_scores[kept]
                finished, scores, is_finished = finished[kept], scores[kept], is_finished[kept]
                improvable, parents = improvable[kept], parents[kept]
        # the cache rows each continuing beam came from
        rows_next = (kept[:, None] * nb + parents).flatten()
        cache.select(rows_next)
        tokens = running[:, :, cur].reshape(-1, 1)
        last = _forward(gpt2, gpt2.transformer.wte(tokens), cache)

    # cropped after the last column any row uses, as transformers crops to the longest hypothesis
    used = (out != fill).flatten(0, 1).any(0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return out[:, :num_return_sequences, :width].reshape(batch * num_return_sequences, width)
