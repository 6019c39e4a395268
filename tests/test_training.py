"em_ssl.training outside the notebook: progress lines of an epoch whose training was cut short."
import io
import torch
import torch.nn.functional as F
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import mae
from fastai.callback.core import Callback, CancelTrainException
from em_ssl.training import ProgressLines


class CutSecondEpoch(Callback):
    def after_batch(self):
        if self.epoch == 1 and self.training: raise CancelTrainException()


def test_progress_lines_keep_names_aligned_when_training_is_cut_short():
    "fastai logs no train loss for a cancelled training phase; the line must not shift the other values one name left."
    x = torch.randn(64, 1)
    dls = DataLoaders.from_dsets(list(zip(x, 2 * x)), list(zip(x, 2 * x)), bs=16)
    buf = io.StringIO()
    learn = Learner(dls, nn.Linear(1, 1), loss_func=F.mse_loss, metrics=[mae], cbs=[ProgressLines(buf), CutSecondEpoch()])
    with learn.no_bar(): learn.fit(2)
    first, second = buf.getvalue().splitlines()
    assert first.startswith('epoch 1/2  train_loss ') and ' valid_loss ' in first and ' mae ' in first
    assert second.startswith('epoch 2/2  train_loss -  valid_loss ')
    assert abs(float(second.split('valid_loss ')[1].split()[0]) - learn.recorder.values[-1][0]) < 1e-3   # under its own name
