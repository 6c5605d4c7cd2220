"""StepInputs: one step's packed model inputs, built on the host once per step.

Plain CPU tensors and ints, so that rank 0 can broadcast them to tensor-parallel ranks; each
rank turns them into device tensors and an AttentionMetadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeserve_pod.engine.scheduler import ScheduledBatch
from edgeserve_pod.layers.attention_base import AttentionMetadata


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # (T,) int64
    positions: torch.Tensor  # (T,) int64
    slot_mapping: torch.Tensor  # (T,) int64
    num_prefill_tokens: int
    num_decode_tokens: int
    cu_seqlens_q: list[int]  # (n_p + 1,)
    cu_seqlens_k: list[int]  # (n_p + 1,)
    prefill_block_tables: torch.Tensor | None  # (n_p, Wp) int32
    decode_block_tables: torch.Tensor | None  # (n_d, Wd) int32
    decode_context_lens: torch.Tensor | None  # (n_d,) int32
    logits_indices: torch.Tensor  # (n_s,) int64: packed rows whose logits are sampled
    overrides: list[dict | None]
    seq_slots: torch.Tensor | None = None  # (n_p + n_d,) int32 ring slots (streaming_kv="ring"), else None

    def to_metadata(self, device: torch.device) -> AttentionMetadata:
        d = lambda t: t.to(device, non_blocking=True) if t is not None else None  # noqa: E731
        n_p = len(self.cu_seqlens_q) - 1
        return AttentionMetadata(
            num_prefill_tokens=self.num_prefill_tokens,
            num_decode_tokens=self.num_decode_tokens,
            slot_mapping=d(self.slot_mapping),
            cu_seqlens_q=d(torch.tensor(self.cu_seqlens_q, dtype=torch.int32)) if n_p else None,
            cu_seqlens_k=d(torch.tensor(self.cu_seqlens_k, dtype=torch.int32)) if n_p else None,
            max_seqlen_q=max((b - a for a, b in zip(self.cu_seqlens_q, self.cu_seqlens_q[1:])), default=0),
            max_seqlen_k=max((b - a for a, b in zip(self.cu_seqlens_k, self.cu_seqlens_k[1:])), default=0),
            prefill_block_tables=d(self.prefill_block_tables),
            decode_block_tables=d(self.decode_block_tables),
            decode_context_lens=d(self.decode_context_lens),
            overrides=self.overrides,
            cu_seqlens_q_cpu=self.cu_seqlens_q if n_p else None,
            cu_seqlens_k_cpu=self.cu_seqlens_k if n_p else None,
            seq_slots=d(self.seq_slots),
        )


def build_step_inputs(batch: ScheduledBatch, block_size: int) -> tuple[StepInputs, list[int]]:
    """Pack a scheduled batch. Returns the inputs and, for each item, its row in logits_indices
    (-1 when the item does not reach the end of its tokens and so samples nothing)."""
    B = block_size
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    cu_q, cu_k = [0], [0]
    p_tables: list[list[int]] = []
    d_tables: list[list[int]] = []
    d_lens: list[int] = []
    logits_rows: list[int] = []
    sample_row: list[int] = []
    overrides: list[dict | None] = []
    ring_slots: list[int | None] = []
    num_prefill_tokens = 0
    for j, (seq, n) in enumerate(batch.items):
        start = seq.num_computed_tokens
        end = start + n
        ids.extend(seq.token_ids[start:end])
        pos.extend(range(start, end))
        bt = seq.block_table
        slots.extend(bt[p // B] * B + p % B for p in range(start, end))
        overrides.append(seq.attention)
        ring_slots.append(seq.ring_slot)
        if j < batch.num_prefill_seqs:
            cu_q.append(cu_q[-1] + n)
            cu_k.append(cu_k[-1] + end)
            p_tables.append(bt)
            num_prefill_tokens += n
        else:
            if n != 1 or end != len(seq):  # the decode forward and graphs give logits for every decode row
                raise ValueError(f"decode row {seq.request_id!r} ({n} tokens from {start} of {len(seq)}) "
                                 "does not end its sequence; it belongs in the prefill group")
            d_tables.append(bt)
            d_lens.append(end)
        if end == len(seq):
            sample_row.append(len(logits_rows))
            logits_rows.append(len(ids) - 1)
        else:
            sample_row.append(-1)
    cols = torch.tensor([ids, pos, slots], dtype=torch.int64)  # (3, T): one host tensor, three views
    inp = StepInputs(
        input_ids=cols[0],
        positions=cols[1],
        slot_mapping=cols[2],
        num_prefill_tokens=num_prefill_tokens,
        num_decode_tokens=len(d_tables),
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        prefill_block_tables=_pad(p_tables),
        decode_block_tables=_pad(d_tables),
        decode_context_lens=torch.tensor(d_lens, dtype=torch.int32) if d_lens else None,
        logits_indices=torch.tensor(logits_rows, dtype=torch.int64),
        overrides=overrides,
        seq_slots=torch.tensor(ring_slots, dtype=torch.int32) if ring_slots and None not in ring_slots else None,
    )
    return inp, sample_row


def _pad(tables: list[list[int]]) -> torch.Tensor | None:
    if not tables:
        return None
    w = max(len(t) for t in tables)
    return torch.tensor([t + [0] * (w - len(t)) for t in tables], dtype=torch.int32)
