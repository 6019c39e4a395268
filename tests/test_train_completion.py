"train_completion: resumable, refuses bad output folders, continues fill_refiner checkpoints (tiny synthetic data)."
import json
import pytest
import torch
from em_ssl.synthetic import make_synthetic_dataset
from em_ssl.partial_scan import train_completion
from em_ssl.checkpoint import load_checkpoint, load_model

KW = dict(size='tiny', crop=64, bs=4, n_crops=8, holdout=0.34, threads=1)

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('tc') / 'lattices'
    make_synthetic_dataset(d, n=4, kind='lattice', size=96, seed=0)
    return d

def test_budget_stop_and_resume(data, tmp_path, capsys):
    out = tmp_path / 'run'
    train_completion(data, out, init='none', minutes=0.03, epochs=40, **KW)   # stops on the budget, after saving
    st = load_checkpoint(out / 'last_state.pth', 'training_state')
    done = st['state']['epoch']
    assert 1 <= done < 40
    assert json.loads((out / 'plan.json').read_text())['epochs'] == 40
    mp = train_completion(data, out, minutes=5, resume=True, **KW)
    assert f"resumed at epoch {done}/40" in capsys.readouterr().out
    assert load_checkpoint(out / 'last_state.pth', 'training_state')['state']['epoch'] == 40
    model, ck = load_model(mp, 'completion')
    assert ck['model']['name'] == 'fill_refiner'
    assert (out / 'report.md').read_text().startswith('# train_completion report')
    rows = [l.split(',') for l in (out / 'metrics.csv').read_text().strip().splitlines()]
    assert all(len(r) == len(rows[0]) for r in rows)             # no ragged row from an epoch cut short by the budget
    epochs = [int(r[0]) for r in rows[1:]]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 40 and len(epochs) >= 39   # at most the cut epoch is missing
    metrics = load_checkpoint(mp, 'completion')['provenance']['metrics']
    assert set(metrics) == set(rows[0]) - {'epoch', 'time'}     # the record's last-epoch metrics, each under its own name

def test_init_from_checkpoint_and_default(data, tmp_path, capsys):
    a = train_completion(data, tmp_path / 'a', init='none', minutes=None, epochs=1, **KW)
    m0, _ = load_model(a, 'completion')
    train_completion(data, tmp_path / 'b', init=str(a), minutes=None, epochs=1, **KW)
    rep = json.loads((tmp_path / 'b' / 'report.json').read_text())
    x = torch.cat([torch.rand(1, 1, 64, 64), (torch.rand(1, 1, 64, 64) < 0.1).float()], 1)
    assert not torch.equal(m0(x), m0.base(x))            # a trained model: not the zero residual any more
    assert rep['before'] and all(r['model'] != r['linear_blur'] for r in rep['before'][:3])
    train_completion(data, tmp_path / 'c', init='default', minutes=None, epochs=1, **KW)
    o = capsys.readouterr().out
    ck = load_checkpoint('default', 'completion')
    if ck['model']['name'] != 'fill_refiner': assert 'starting from a fresh FillRefiner' in o

def test_refusals(data, tmp_path):
    (tmp_path / 'full').mkdir(); (tmp_path / 'full' / 'x.txt').write_text('x')
    with pytest.raises(FileExistsError, match='resume=True'): train_completion(data, tmp_path / 'full', init='none')
    for bad, msg in [(dict(scan='zigzag'), 'zigzag'), (dict(noise='gauss'), 'noise must be'), (dict(holdout=1.), 'holdout'),
                     (dict(size='huge'), 'size must be'), (dict(bs=0), 'bs must be'), (dict(minutes=-1), 'minutes')]:
        with pytest.raises(ValueError, match=msg): train_completion(data, tmp_path / 'new', init='none', **bad)
    assert not (tmp_path / 'new').exists()                 # inputs are checked before anything is written
    with pytest.raises(FileNotFoundError): train_completion(tmp_path / 'missing', tmp_path / 'new', init='none')


def test_stage2_adversarial_training_of_a_fill_refiner(tmp_path):
    "The paper's stage 2 (multi-scale critic, ALRC-free ratio loss + adversarial term, replay) runs on a FillRefiner."
    import numpy as np
    from fastai.data.core import DataLoaders
    from fastai.torch_core import TensorImage
    from em_ssl.data import PartialScanTransform
    from em_ssl.synthetic import lattice_image
    from em_ssl.models.partial_scan import PartialScanConfig, FillRefiner
    from em_ssl.partial_scan import partial_scan_learner
    imgs = torch.stack([torch.from_numpy(lattice_image(64, seed=i))[None] for i in range(4)])
    x, y = PartialScanTransform(kinds=('spiral',), coverage=0.1, seed=0)((TensorImage(imgs),))
    items = [(x[i], y[i]) for i in range(4)]
    dls = DataLoaders.from_dsets(items, items[:2], bs=2, shuffle=False, device='cpu')
    s1 = partial_scan_learner(dls, PartialScanConfig.tiny(), model='fill_refiner', path=tmp_path, seed=0)
    with s1.no_bar(), s1.no_logging(): s1.fit_paper(1, lr=1e-3)
    gen = s1.generator
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    s2 = partial_scan_learner(dls, PartialScanConfig.tiny(), stage=2, generator=gen, path=tmp_path, seed=0, replay_size=3)
    with s2.no_bar(), s2.no_logging(): s2.fit_paper(1, lr=1e-3)
    assert isinstance(s2.generator, FillRefiner)
    assert np.isfinite(s2.critic_step.epoch_means()['d_loss'])
    assert any(not torch.equal(before[k], v) for k, v in s2.generator.state_dict().items())
