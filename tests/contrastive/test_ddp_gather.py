"""gather_across_ranks: 2 CPU processes (gloo) give the single-process loss on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ctseg.contrastive import PatchContrastiveLoss

CHANNELS = [8, 12, 16, 20]
STRIDES = [4, 8, 16, 32]
K, SIZE, PER_RANK, WORLD = 3, 64, 2, 2


def full_batch():
    g = torch.Generator().manual_seed(123)
    coarse = torch.randint(0, K, (PER_RANK * WORLD, SIZE // 8, SIZE // 8), generator=g)
    mask = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    feats = [
        torch.randn(PER_RANK * WORLD, c, SIZE // s, SIZE // s, generator=g)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]
    return feats, mask


def make_loss(loss, **kw):
    torch.manual_seed(7)  # identical heads everywhere
    return PatchContrastiveLoss(CHANNELS, K, loss=loss, samples_per_class=24, clip_mode=None, **kw)


def worker(rank, port, loss, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        feats, mask = full_batch()
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        local = [f[part].clone().requires_grad_() for f in feats]
        fn = make_loss(loss, gather_across_ranks=True)
        fn.keep_details = True
        out = fn(local, mask[part], generator=torch.Generator().manual_seed(1000 + rank))
        out.backward()
        torch.save(
            {
                "loss": out.detach(),
                "grads": [f.grad for f in local],
                "details": [{k: v for k, v in d.items()} for d in fn.details],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


class FixedSamples(PatchContrastiveLoss):
    """Single process, fed the union of the ranks' samples (valid ones first, rank order kept)."""

    def set_samples(self, per_stage):
        self._queue = list(per_stage)

    def _sample(self, eligible, generator):
        index, valid = self._queue.pop(0)
        return index, valid, eligible.sum(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["cl", "infonce"])
def test_gathered_loss_equals_single_process(tmp_path, loss):
    mp.start_processes(worker, args=(free_port(), loss, str(tmp_path)), nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    feats, mask = full_batch()
    torch.testing.assert_close(ranks[0]["loss"], ranks[1]["loss"])

    samples = []
    for s, stride in enumerate(STRIDES):
        cells = PER_RANK * (SIZE // stride) ** 2
        idx, val = [], []
        for r in range(WORLD):
            d = ranks[r]["details"][s]
            idx.append(d["index"] + r * cells)  # local patch index → index in the concatenated batch
            val.append(d["valid"])
        index, valid = torch.cat(idx, 1), torch.cat(val, 1)
        order = (~valid).to(torch.int8).argsort(dim=1, stable=True)
        samples.append((index.gather(1, order), valid.gather(1, order)))
    single = FixedSamples(CHANNELS, K, loss=loss, samples_per_class=48, clip_mode=None)
    single.load_state_dict(make_loss(loss).state_dict())
    single.set_samples(samples)
    leaves = [f.clone().requires_grad_() for f in feats]
    ref = single(leaves, mask)
    ref.backward()
    assert float(single.stats["classes"].sum()) > 0
    torch.testing.assert_close(ranks[0]["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
    # all_gather's backward sums every rank's (identical) loss gradient: W × the single-process gradient,
    # which DDP's gradient averaging divides back — so parameters get exactly the global-batch gradient.
    for r in range(WORLD):
        part = slice(r * PER_RANK, (r + 1) * PER_RANK)
        for g_rank, leaf in zip(ranks[r]["grads"], leaves, strict=True):
            torch.testing.assert_close(g_rank / WORLD, leaf.grad[part], rtol=1e-4, atol=1e-7)
