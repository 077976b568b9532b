"""The pieces of the recipe, one at a time: schedule, loss positions, L2, clipping, the data
order per epoch and per process, sharded checkpoints."""

import functools
import math

import pytest
import torch

from deepsynth.checkpoint import load_checkpoint, read_payload, save_checkpoint, shard_files
from deepsynth.config import AudioConfig
from deepsynth.errors import DeepSynthError
from deepsynth.model import DeepSynth, get_preset
from deepsynth.model.output import MuLawSoftmax
from deepsynth.sim import keyboard
from deepsynth.train import TrainConfig, lr_at
from deepsynth.train.config import RunOptions
from deepsynth.train.data import DeviceBatch, epoch_batches, steps_per_epoch, validation_batches
from deepsynth.train.objective import decayed_parameters, l2_penalty, segment_loss
from deepsynth.train.step import noise_seed, noisy, train_step

# --- schedule -------------------------------------------------------------------------------


def test_paper_schedule_decays_tenfold_every_20000_batches_to_1e_6():
    cfg = TrainConfig()
    expected = {0: 1e-3, 1: 1e-3, 19_999: 1e-3, 20_000: 1e-4, 39_999: 1e-4, 40_000: 1e-5,
                59_999: 1e-5, 60_000: 1e-6, 80_000: 1e-6, 150_000: 1e-6, 10**12: 1e-6}
    for step, lr in expected.items():
        assert lr_at(step, cfg) == lr, step  # exactly the decimal values, no rounding drift
    steps = range(0, 200_000, 997)
    assert all(lr_at(a, cfg) >= lr_at(b, cfg) for a, b in zip(steps, steps[1:], strict=False))


def test_schedule_with_other_numbers():
    cfg = TrainConfig(lr=2e-3, lr_decay_every=10, lr_decay_factor=0.5, lr_min=3e-4)
    assert [lr_at(s, cfg) for s in (0, 9, 10, 20, 29, 30, 1000)] == pytest.approx(
        [2e-3, 2e-3, 1e-3, 5e-4, 5e-4, 3e-4, 3e-4])
    with pytest.raises(ValueError):
        lr_at(-1, cfg)


def test_warmup_ramps_linearly_into_the_schedule():
    plain = TrainConfig(lr=2e-3, lr_decay_every=10, lr_decay_factor=0.5, lr_min=3e-4)
    warm = TrainConfig(lr=2e-3, lr_decay_every=10, lr_decay_factor=0.5, lr_min=3e-4, lr_warmup=4)
    assert [lr_at(s, warm) for s in range(4)] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3])
    assert all(lr_at(s, warm) == lr_at(s, plain) for s in range(4, 100))
    assert TrainConfig().lr_warmup == 0  # the paper's recipe has none
    with pytest.raises(ValueError):
        TrainConfig(lr_warmup=-1)


def test_train_config_defaults_are_the_papers_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.lr_decay_every, cfg.lr_decay_factor, cfg.lr_min) == (1e-3, 20_000, 0.1,
                                                                             1e-6)
    assert (cfg.batch_size, cfg.grad_clip, cfg.epochs, cfg.val_segments) == (3, 10.0, 200, 100)
    resolved = cfg.resolved(preset_l2=1e-4, cuda=False)
    assert (resolved.l2, resolved.precision, resolved.compile) == (1e-4, "fp32", False)
    assert cfg.resolved(1e-2, cuda=True).precision == "bf16"
    assert cfg.resolved(1e-2, cuda=True).compile is True
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved
    for bad in ({"lr": 0}, {"batch_size": 0}, {"grad_clip": -1}, {"precision": "fp16"},
                {"l2": -1e-4}, {"lr_decay_factor": 2.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError):
        RunOptions(resume="sometimes")


# --- loss -----------------------------------------------------------------------------------


def test_loss_covers_only_positions_from_loss_start():
    g = torch.Generator().manual_seed(0)
    B, K, T, start = 3, 256, 50, 20
    logits = torch.randn(B, K, T, generator=g, requires_grad=True)
    classes = torch.randint(0, K, (B, T), generator=g)
    segment_ce = functools.partial(segment_loss, MuLawSoftmax(AudioConfig()))
    loss = segment_ce(logits, classes, start)
    manual = torch.nn.functional.cross_entropy(
        logits[:, :, start:].permute(0, 2, 1).reshape(-1, K), classes[:, start:].reshape(-1))
    torch.testing.assert_close(loss, manual)
    other = classes.clone()
    other[:, :start] = (other[:, :start] + 1 + torch.randint(0, K - 1, (B, start), generator=g)) % K
    assert not torch.equal(other[:, :start], classes[:, :start])
    assert torch.equal(segment_ce(logits, other, start), loss)  # context targets do not count
    changed = classes.clone()
    changed[:, start] = (changed[:, start] + 1) % K
    assert not torch.equal(segment_ce(logits, changed, start), loss)  # the window's do
    loss.backward()
    assert logits.grad[:, :, :start].abs().max() == 0 and logits.grad[:, :, start:].abs().max() > 0
    assert segment_ce(logits.detach().bfloat16(), classes, start).dtype == torch.float32


def test_l2_penalty_is_half_the_squared_weights_without_biases():
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    decayed = decayed_parameters(model)
    names = {n for n, p in model.named_parameters() if any(p is q for q in decayed)}
    assert names and all(not n.endswith("bias") for n in names)
    assert all(p.dim() >= 2 for p in decayed)
    expected = 0.5 * 1e-2 * sum(float((p.detach().double() ** 2).sum()) for p in decayed)
    assert float(l2_penalty(decayed, 1e-2).detach()) == pytest.approx(expected, rel=1e-5)
    # its gradient is l2 * w: the same push as coupled weight decay, but before clipping
    w = decayed[0]
    (grad,) = torch.autograd.grad(l2_penalty(decayed, 1e-2), [w])
    torch.testing.assert_close(grad, 1e-2 * w.detach())


def tiny_batch(model, B=3, T=300, N=4, start=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (N, 57, 780), generator=g).to(torch.uint8)
    index = torch.sort(torch.randint(0, N, (B, T), generator=g), dim=1).values
    audio = torch.rand(B, T, generator=g) * 2 - 1
    return DeviceBatch(frames, index, audio, start)


def test_gradient_is_clipped_and_its_norm_logged_before_clipping():
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    params = list(model.parameters())
    batch = tiny_batch(model)
    # the unclipped gradient, measured by hand
    model.zero_grad()
    classes = model.output.encode(batch.audio)
    segment_loss(model.output, model(batch.frames, batch.frame_index, classes), classes,
                 batch.loss_start).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None))
    norm = norm.item()
    before = [p.detach().clone() for p in params]
    clip = norm / 100
    sgd = torch.optim.SGD(params, lr=1.0)  # the update is minus the clipped gradient
    r = train_step(model, model.output, batch, sgd, params, [], 0.0, clip)
    assert r.grad_norm.item() == pytest.approx(norm, rel=1e-4)  # logged before clipping
    step = math.sqrt(sum(float(((p.detach() - b).double() ** 2).sum())
                         for p, b in zip(params, before, strict=True)))
    assert step == pytest.approx(clip, rel=1e-3)  # the change is bounded by the clip norm
    # no clipping when the norm is under the limit, or with clip 0
    for limit in (norm * 10, 0.0):
        model.load_state_dict({k: v for k, v in zip(model.state_dict(), before, strict=True)})
        before2 = [p.detach().clone() for p in params]
        r = train_step(model, model.output, batch, sgd, params, [], 0.0, limit)
        step = math.sqrt(sum(float(((p.detach() - b).double() ** 2).sum())
                             for p, b in zip(params, before2, strict=True)))
        assert step == pytest.approx(r.grad_norm.item(), rel=1e-3)


# --- data order -----------------------------------------------------------------------------


def test_epoch_batches_are_seeded_permutations_shared_among_processes():
    n, b = 23, 3
    one = epoch_batches(n, b, seed=5, epoch=0)
    assert len(one) == steps_per_epoch(n, b) == 7
    flat = [i for batch in one for i in batch]
    assert len(set(flat)) == len(flat) == 21 and all(len(x) == b for x in one)
    assert one == epoch_batches(n, b, seed=5, epoch=0)  # a function of (seed, epoch) alone
    assert one != epoch_batches(n, b, seed=5, epoch=1) != epoch_batches(n, b, seed=6, epoch=0)
    # two processes: disjoint shares, each global step = the single-process batch of 2b
    r0, r1 = (epoch_batches(n, b, 5, 0, rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) == steps_per_epoch(n, b, 2) == 3
    double = epoch_batches(n, 2 * b, 5, 0)
    for s in range(3):
        assert not set(r0[s]) & set(r1[s])
        assert r0[s] + r1[s] == double[s]
    val = list(range(100, 110))
    shares = [validation_batches(val, 3, r, 2) for r in (0, 1)]
    assert sorted(i for s in shares for batch in s for i in batch) == val


# --- sharded checkpoints --------------------------------------------------------------------


def test_sharded_checkpoint_round_trip_and_damage(tmp_path):
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    path = tmp_path / "last.pt"
    opt = torch.optim.Adam(model.parameters())
    shard_mb = 0.02  # about 20 kB per part: several parts for the tiny model + Adam
    save_checkpoint(path, model, extra={"step": 1}, shard_mb=shard_mb, optimizer=opt.state_dict())
    parts = shard_files(path)
    assert len(parts) >= 3 and all(p.stat().st_size <= shard_mb * 2**20 for p in parts)
    assert path.stat().st_size <= shard_mb * 2**20
    loaded, payload = load_checkpoint(path)
    assert payload["extra"] == {"step": 1} and "optimizer" in payload
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    # a new write replaces the parts (no stale ones left), a small one needs no parts at all
    save_checkpoint(path, model, extra={"step": 2}, shard_mb=shard_mb, optimizer=opt.state_dict())
    assert len(shard_files(path)) == len(parts) and not set(shard_files(path)) & set(parts)
    save_checkpoint(path, model, extra={"step": 3}, shard_mb=16)
    assert shard_files(path) == [] and read_payload(path)["extra"]["step"] == 3
    # a damaged or missing part is a one-line error naming the checkpoint
    save_checkpoint(path, model, shard_mb=shard_mb, optimizer=opt.state_dict())
    parts = shard_files(path)
    data = bytearray(parts[1].read_bytes())
    data[100] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(DeepSynthError, match="corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    parts[1].unlink()
    with pytest.raises(DeepSynthError, match="missing"):
        load_checkpoint(path)


def test_input_noise_perturbs_what_the_decoder_reads_not_the_targets(monkeypatch):
    classes = torch.randint(0, 256, (4, 5000))
    classes[0, :100] = 0
    a = noisy(classes, 1.5, 256, seed=noise_seed(0, 0, 7))
    torch.manual_seed(123)  # the global generator plays no part: a resumed run draws the same
    assert torch.equal(a, noisy(classes, 1.5, 256, seed=noise_seed(0, 0, 7)))
    for other in (noise_seed(0, 1, 7), noise_seed(0, 0, 8), noise_seed(1, 0, 7)):
        assert not torch.equal(a, noisy(classes, 1.5, 256, seed=other))  # per rank and step
    assert noisy(classes, 0.0, 256) is classes
    d = (a - classes).float()
    assert a.min() >= 0 and a.max() <= 255 and 1.3 < d[1:].std() < 1.7
    assert (d[0, :100] >= 0).all()  # clamped at the lowest class
    with pytest.raises(ValueError, match="input_noise"):
        TrainConfig(input_noise=-1.0)
    # the step: the model reads the noisy classes, the loss scores the clean ones
    torch.manual_seed(0)
    model = DeepSynth(get_preset("tiny").model, keyboard.layout())
    seen = []
    real_forward = model.forward
    monkeypatch.setattr(model, "forward", lambda f, i, c: seen.append(c) or real_forward(f, i, c))
    scored = []
    real_loss = model.output.loss
    monkeypatch.setattr(model.output, "loss", lambda p, t, r="mean": scored.append(t) or
                        real_loss(p, t, r))
    T = 3 * model.receptive_field
    frames = torch.from_numpy(keyboard.render(torch.zeros(1, 88, dtype=torch.bool).numpy()))
    audio = torch.sin(torch.arange(T) / 5.0)[None] * 0.5
    batch = DeviceBatch(frames, torch.zeros(1, T + model.lookahead, dtype=torch.long), audio,
                        model.receptive_field)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    train_step(model, model.output, batch, opt, params, [], 0.0, 0.0, input_noise=2.0)
    clean = model.output.encode(audio)
    assert not torch.equal(seen[0], clean)
    assert torch.equal(scored[0], clean[:, model.receptive_field:])
