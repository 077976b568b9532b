"""The decoder step in PyTorch with static shapes, for any device; on CUDA the step is captured
once in a CUDA graph and replayed per sample (no Python or launch overhead per operation).

Same interface and same results as `fused.FusedDecoderState` (tests compare them on the CPU).
Everything the step reads or writes lives in preallocated tensors: the ring buffers, the sample
counter, the chunk's conditioning and uniforms; ring positions are computed on the device from
the counter, so one captured graph serves every sample.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepsynth.model.output import OutputDistribution
from deepsynth.model.wavenet import WaveNetDecoder


class GraphedDecoderState:
    def __init__(
        self,
        decoder: WaveNetDecoder,
        output: OutputDistribution,
        batch: int,
        chunk: int,
        device: str | torch.device = "cpu",
        use_graph: bool | None = None,
    ) -> None:
        dev = torch.device(device)
        self.dec = decoder.to(dev).eval()
        self.output = output
        self.device, self.chunk, self.batch = dev, chunk, batch
        blocks = decoder.stack.blocks
        self.k = decoder.stack.kernel_size
        self.dil = list(decoder.stack.dilations)
        R = blocks[0].conv.in_channels
        self.R, self.L, self.K = R, len(blocks), decoder.n_params
        self.table = (decoder.input.weight[:, :, 0].t() + decoder.input.bias).detach()
        self.bufs = [torch.zeros(batch, R, max((self.k - 1) * d, 1), device=dev) for d in self.dil]
        self.t = torch.zeros((), dtype=torch.long, device=dev)  # samples generated so far
        self.local = torch.zeros((), dtype=torch.long, device=dev)  # position in the chunk
        self.prev = torch.full((batch,), output.silence, dtype=torch.long, device=dev)
        C = decoder.stack.cond_channels
        self.cond = torch.zeros(batch, chunk, C, device=dev)  # the conditioning (C channels)
        # each block's projection of it, (2R, C), or None for a block without conditioning
        self.cond_w = [None if b.cond is None else b.cond.weight[:, :, 0].detach()
                       for b in blocks]
        self.uniforms = torch.zeros(batch, chunk, output.n_uniforms, device=dev)
        self.forced = torch.zeros(batch, chunk, dtype=torch.long, device=dev)
        self.use_forced = torch.zeros((), dtype=torch.bool, device=dev)
        self.inv_temp = torch.ones((), device=dev)
        self.floor = torch.zeros((), device=dev)
        self.rows = torch.arange(batch, device=dev)
        self.out_classes = torch.zeros(batch, chunk, dtype=torch.long, device=dev)
        self.out_logits = torch.zeros(batch, chunk, self.K, device=dev)
        self.use_graph = (dev.type == "cuda") if use_graph is None else use_graph
        self.graph = None

    @torch.no_grad()
    def _step(self) -> None:
        rows = self.rows
        x = self.table[self.prev]  # (B, R)
        cond_t = self.cond[rows, self.local]  # (B, C)
        skips = 0
        for l, (block, d) in enumerate(zip(self.dec.stack.blocks, self.dil, strict=True)):
            ctx = (self.k - 1) * d
            buf = self.bufs[l]
            taps = []
            for j in range(self.k - 1):
                back = (self.k - 1 - j) * d
                taps.append(buf.index_select(2, ((self.t - back) % ctx).view(1)).squeeze(2))
            window = torch.stack([*taps, x], dim=2).flatten(1)  # (B, R * k) like the weight
            h = F.linear(window, block.conv.weight.flatten(1), block.conv.bias)
            if self.cond_w[l] is not None:
                h = h + F.linear(cond_t, self.cond_w[l])
            buf.index_copy_(2, (self.t % ctx).view(1), x[:, :, None])
            f, g = h.chunk(2, dim=1)
            z = torch.tanh(f) * torch.sigmoid(g)
            x = x + F.linear(z, block.res.weight[:, :, 0], block.res.bias)
            skips = skips + F.linear(z, block.skip.weight[:, :, 0], block.skip.bias)
        hid = F.relu(F.linear(F.relu(skips), self.dec.head1.weight[:, :, 0], self.dec.head1.bias))
        logits = F.linear(hid, self.dec.head2.weight[:, :, 0], self.dec.head2.bias)
        nxt = self.output.sample(logits, self.uniforms[rows, self.local], self.inv_temp,
                                 self.floor)
        nxt = torch.where(self.use_forced, self.forced[rows, self.local], nxt)
        self.out_logits[rows, self.local] = logits
        self.out_classes[rows, self.local] = nxt
        self.prev.copy_(nxt)
        self.t.add_(1)
        self.local.add_(1)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        saved = ([b.clone() for b in self.bufs], self.t.clone(), self.local.clone(),
                 self.prev.clone())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up outside the graph
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()
        for b, s in zip(self.bufs, saved[0], strict=True):  # undo the warm-up and capture
            b.copy_(s)
        self.t.copy_(saved[1])
        self.local.copy_(saved[2])
        self.prev.copy_(saved[3])

    @torch.no_grad()
    def run(
        self,
        cond: np.ndarray | torch.Tensor | None,
        n: int,
        uniforms: np.ndarray | None = None,
        temperature: float = 1.0,
        forced: np.ndarray | None = None,
        keep_logits: bool = False,
        floor: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if n > self.chunk:
            raise ValueError(f"at most {self.chunk} samples per call")
        self.cond.zero_()
        if cond is not None:
            self.cond[:, :n] = torch.as_tensor(cond, device=self.device)
        if uniforms is not None:
            self.uniforms[:, :n] = torch.as_tensor(uniforms, device=self.device)
        self.use_forced.fill_(forced is not None)
        if forced is not None:
            self.forced[:, :n] = torch.as_tensor(forced, device=self.device)
        self.inv_temp.fill_(0.0 if temperature <= 0 else 1.0 / temperature)
        self.floor.fill_(float(floor))
        self.local.zero_()
        if self.use_graph and self.graph is None:
            self._capture()
        for _ in range(n):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        # copies: on the CPU .cpu() would share memory with buffers the next call overwrites
        classes = self.out_classes[:, :n].to("cpu", copy=True).numpy()
        logits = self.out_logits[:, :n].to("cpu", copy=True).numpy() if keep_logits else None
        return classes, logits
