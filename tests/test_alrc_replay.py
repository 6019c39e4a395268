"Integration tests for em_ssl.alrc and em_ssl.replay with fastai Learners (checkpoints, tensor types, devices)."
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.torch_core import TensorImage

from em_ssl.alrc import ALRC, ALRCCallback, ALRCLoss, per_item_loss
from em_ssl.replay import HardExampleReplay, HardExampleReplayCallback
from em_ssl.training import ResumableLearner, TrainingCheckpoint

warnings.filterwarnings('ignore', message='.*torch.jit.script.*is deprecated')


def _learner(path, cbs=None, loss_func=None, n=96, bs=8, image=False, device='cpu'):
    torch.manual_seed(0)
    if image:
        x = torch.rand(n, 1, 8, 8); y = x.clone(); y[::10] = 1 - y[::10]
        x, y = TensorImage(x), TensorImage(y)
        model = nn.Conv2d(1, 1, 3, padding=1)
    else:
        x = torch.randn(n, 4); y = x.sum(1, keepdim=True); y[::10] += 20
        model = nn.Linear(4, 1)
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x, y), bs=bs, device=device)
    return ResumableLearner(dls, model.to(device), loss_func=loss_func or MSELossFlat(), lr=1e-2, cbs=cbs, path=path,
                            model_name='conv' if image else 'linear')


def test_training_checkpoint_keeps_callback_state(tmp_path):
    "TrainingCheckpoint's one-file training state carries the ALRC moments and the replay buffer."
    alrc_cb, replay_cb = ALRCCallback(mu1_start=1., mu2_start=4.), HardExampleReplayCallback(size=10, seed=0)
    learn = _learner(tmp_path, cbs=[alrc_cb, replay_cb])
    with learn.no_logging(), learn.no_bar():
        learn.fit(2, cbs=TrainingCheckpoint('state'))
    assert (tmp_path/'models'/'state.pth').exists()
    assert sorted(p.name for p in (tmp_path/'models').iterdir()) == ['state.pth']     # no side files
    a2, r2 = ALRCCallback(), HardExampleReplayCallback(size=10)
    learn2 = _learner(tmp_path, cbs=[a2, r2])
    assert learn2.load_training_state('state') == 2
    assert torch.equal(a2.alrc.mu1, alrc_cb.alrc.mu1) and torch.equal(a2.alrc.mu2, alrc_cb.alrc.mu2)
    assert torch.equal(torch.stack(r2.replay.xs), torch.stack(replay_cb.replay.xs))
    assert r2.replay.thresh == replay_cb.replay.thresh and r2.replay.n_seen == replay_cb.replay.n_seen


def test_fastai_learner_is_not_patched(tmp_path):
    "fastai's Learner.save/load are fastai's own: a plain learner with em_ssl callbacks writes only the model file."
    import fastai.learner
    assert fastai.learner.Learner.save.__module__ == 'fastai.learner'
    assert not hasattr(fastai.learner.Learner.save, '_em_ssl_callback_state')
    dls = _learner(tmp_path).dls
    learn = Learner(dls, nn.Linear(4, 1), loss_func=MSELossFlat(), cbs=ALRCCallback(), path=tmp_path)
    f = learn.save('plain')
    assert sorted(p.name for p in f.parent.iterdir()) == ['plain.pth']
    learn.load('plain')


def test_load_training_state_needs_the_same_callbacks(tmp_path):
    learn = _learner(tmp_path)
    learn.save_training_state('plain', epoch=0)
    with pytest.raises(ValueError, match=r"callbacks \[\], but this learner has \['alrc'\]"):
        _learner(tmp_path, cbs=ALRCCallback()).load_training_state('plain')


def test_replay_keeps_tensor_image_type_and_trains(tmp_path):
    "Replayed examples are swapped into TensorImage batches without losing the type; training still runs."
    seen_types = []

    class Spy(HardExampleReplayCallback):
        def before_batch(self):
            super().before_batch()
            if self.training: seen_types.append((type(self.learn.xb[0]), self.n_replayed))

    cb = Spy(size=8, seed=0, p_replay=0.5)
    learn = _learner(tmp_path, cbs=cb, image=True)
    with learn.no_logging(), learn.no_bar():
        learn.fit(1)
    assert cb.total_replayed > 0 and any(k > 0 for _, k in seen_types)
    assert all(t is TensorImage for t, _ in seen_types)


def test_callbacks_need_per_element_losses(tmp_path):
    "A loss function that cannot return per-element losses fails with a clear message naming `reduction`."
    def mean_only(pred, targ): return ((pred - targ) ** 2).mean()
    for cb in (ALRCCallback(), HardExampleReplayCallback()):
        learn = _learner(tmp_path, cbs=cb, loss_func=mean_only)
        with pytest.raises(TypeError, match='reduction'), learn.no_logging(), learn.no_bar():
            learn.fit(1)


def test_replay_rejects_multi_input_batches(tmp_path):
    cb = HardExampleReplayCallback()
    learn = _learner(tmp_path, cbs=cb)
    learn.xb, learn.yb, learn.training = (torch.zeros(2, 4), torch.zeros(2, 4)), (torch.zeros(2, 1),), True
    cb.learn = learn
    with pytest.raises(ValueError, match='one input and one target'):
        cb.before_batch()


def test_alrc_loss_per_item_and_gradients():
    crit = ALRCLoss(MSELossFlat(), ALRC(mu1_start=1., mu2_start=2.))
    pred = torch.tensor([[0.], [10.]], requires_grad=True)
    loss = crit(pred, torch.zeros(2, 1))
    loss.backward()
    assert torch.allclose(loss, torch.tensor(2.0))                       # (0 + 4) / 2
    assert torch.allclose(pred.grad[1], torch.tensor([2 * 10 * 0.04 / 2]))  # scaled, not zeroed
    assert torch.allclose(per_item_loss(crit, pred, torch.zeros(2, 1)), torch.tensor([0., 100.]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_alrc_and_replay_on_gpu(tmp_path):
    a = ALRC().cuda()
    out = a(torch.rand(8, device='cuda') * 100)
    assert out.is_cuda and a.mu1.is_cuda
    rb = HardExampleReplay(size=4, seed=0)
    rb.add(torch.rand(8, 3, device='cuda'), torch.rand(8, 1, device='cuda'), torch.rand(8, device='cuda'))
    assert rb.xs[0].device.type == 'cpu'
    alrc_cb, replay_cb = ALRCCallback(mu1_start=1., mu2_start=4.), HardExampleReplayCallback(size=4, seed=0)
    learn = _learner(tmp_path, cbs=[alrc_cb, replay_cb], image=True, device='cuda')
    with learn.no_logging(), learn.no_bar():
        learn.fit(1)
    assert replay_cb.total_replayed > 0 and alrc_cb.alrc.mu1.is_cuda and float(alrc_cb.alrc.mu1) != 1.
    learn.save_training_state('gpu', epoch=1)
    a2, r2 = ALRCCallback(), HardExampleReplayCallback(size=4)
    learn2 = _learner(tmp_path, cbs=[a2, r2], image=True, device='cuda')
    assert learn2.load_training_state('gpu') == 1
    assert torch.equal(a2.alrc.mu1.cpu(), alrc_cb.alrc.mu1.cpu())
    assert torch.equal(torch.stack(r2.replay.xs), torch.stack(replay_cb.replay.xs))
