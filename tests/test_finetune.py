"Fine-tuning (em_ssl.finetune): data folders, weight transfer, Learner, checkpoints, predict_files, bad input."
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from em_ssl import io as emio
from em_ssl.checkpoint import CheckpointError, load_checkpoint
from em_ssl.finetune import (STATE_FILE, TASKS, PredictionCollapseWarning, SegmentationLoss, finetune_folders,
                             finetune_learner, finetune_model, load_finetuned, parse_lr, predict_array, predict_files,
                             tiny_pretrained_checkpoint, transfer_weights)
from em_ssl.labels import (MIN_EPOCH_CROPS, coords_dls, load_mask, match_files, paired_dls, read_coords,
                           segmentation_dls, targets_kind)
from em_ssl.models import build_model
from em_ssl.synthetic import lattice_image, make_synthetic_dataset

TINY = {'base_width': 4}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('ft')
    return {'root': root,
            'ckpt': tiny_pretrained_checkpoint(root / 'pre.pth', arch_kwargs=TINY, steps=3, size=32),
            'np': make_synthetic_dataset(root / 'np', n=4, kind='nanoparticle', size=64, seed=0),
            'den': make_synthetic_dataset(root / 'den', n=3, kind='denoise_bg', size=64, seed=1, fmt='png'),
            'atoms': make_synthetic_dataset(root / 'atoms', n=3, kind='atoms', size=64, seed=2)}


def src_weights(path): return load_checkpoint(path, 'pretrained')['weights']


def test_tiny_checkpoint_is_a_pretrained_checkpoint(data):
    ck = load_checkpoint(data['ckpt'], 'pretrained')
    assert ck['format'] == 'em_ssl.checkpoint' and ck['model']['name'] == 'unet_2_44'
    assert ck['model']['config']['base_width'] == 4 and ck['extra']['head_prefix'] == 'head.'


@pytest.mark.parametrize('task', TASKS)
def test_transfer_counts(data, task):
    model, info = finetune_model(task, pretrained=data['ckpt'])
    src = src_weights(data['ckpt'])
    body = [k for k in src if not k.startswith('head.')]
    assert all(torch.equal(model.state_dict()[k], src[k]) for k in body)
    if task == 'segment':
        assert info['head'] == 'new' and info['transferred'] == len(body)
    else:
        assert info['head'] == 'transferred' and info['transferred'] == len(src)
        assert torch.equal(model.head.weight, src['head.weight'])


def test_new_head_for_restoration_and_multiclass(data):
    _, info = finetune_model('superres', pretrained=data['ckpt'], new_head=True)
    assert info['head'] == 'new'
    m, info = finetune_model('segment', pretrained=data['ckpt'], n_classes=4)
    assert m.head.out_channels == 4 and info['n_out'] == 4


def test_transfer_is_strict(data):
    src = src_weights(data['ckpt'])
    with pytest.raises(ValueError, match='shape mismatch'):
        transfer_weights(src, build_model('unet_2_44', base_width=8))
    with pytest.raises(ValueError, match='missing'):
        transfer_weights(src, build_model('unet_3_96', **TINY))
    partial = {k: v for k, v in src.items() if k != 'encoder.0.conv1.weight'}
    with pytest.raises(ValueError, match='encoder.0.conv1.weight'):
        transfer_weights(partial, build_model('unet_2_44', **TINY))


def test_random_init_defaults_to_the_bundled_architecture():
    bundled = load_checkpoint('default', 'pretrained')['model']
    m, info = finetune_model('denoise', pretrained=None)
    assert info['arch'] == bundled['name'] and info['transferred'] == 0 and info['pretrained'] is None
    assert info['arch_kwargs'] == {k: v for k, v in bundled['config'].items() if k != 'n_out'}
    m, info = finetune_model('denoise', pretrained=None, arch='unet_2_44', arch_kwargs=TINY)
    assert info['arch_kwargs']['base_width'] == 4


def test_bad_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        finetune_model('segment', pretrained=tmp_path / 'nope.pth')
    torch.save({'format': 'something/else'}, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'something/else'"):
        finetune_model('segment', pretrained=tmp_path / 'x.pth')


def test_folders_of_symlinks(data, tmp_path):
    "A labelled subset made of links into a bigger dataset (a common way to pick 10 of 150 images) pairs by link name."
    for k in ('images', 'masks'):
        (tmp_path / k).mkdir()
        for f in sorted((data['np'] / k).iterdir())[:2]: (tmp_path / k / f.name).symlink_to(f)
    pairs = match_files(tmp_path / 'images', tmp_path / 'masks')
    links = {k: sorted(f.name for f in (tmp_path / k).iterdir()) for k in ('images', 'masks')}
    assert [(a.name, b.name) for a, b in pairs] == list(zip(links['images'], links['masks']))
    assert all(a.parent == tmp_path / 'images' for a, _ in pairs)


def test_match_files_errors(data, tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no micrographs found'):
        match_files(tmp_path / 'empty', data['np'] / 'masks')
    with pytest.raises(FileNotFoundError, match='folder not found'):
        match_files(tmp_path / 'missing', data['np'] / 'masks')
    masks = tmp_path / 'masks'; masks.mkdir()
    for f in sorted((data['np'] / 'masks').iterdir())[:2]: (masks / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="2 of 4 file.*0002.tif"):
        match_files(data['np'] / 'images', masks)
    assert len(match_files(data['np'] / 'images', masks, unmatched='skip')) == 2


def test_shape_mismatch_is_an_error(data, tmp_path):
    imgs = tmp_path / 'imgs'; imgs.mkdir()
    for f in (data['np'] / 'images').iterdir(): emio.save_tiff(imgs / f.name, np.random.rand(50, 64))
    with pytest.raises(ValueError, match='must have the same size'):
        segmentation_dls(imgs, data['np'] / 'masks', crop=32)


def test_multiclass_masks(data, tmp_path):
    masks = tmp_path / 'classes'; masks.mkdir()
    for i, f in enumerate(sorted((data['np'] / 'images').iterdir())):
        lab = (np.arange(64)[None, :].repeat(64, 0) // 22).astype(np.uint8)   # classes 0, 1, 2
        Image.fromarray(lab).save(masks / f'{f.stem}.png')
    dls = segmentation_dls(data['np'] / 'images', masks, crop=32, bs=2, n_classes=3)
    xb, yb = dls.one_batch()
    assert yb.dtype == torch.int64 and yb.shape == (2, 32, 32) and int(yb.max()) <= 2
    learn = finetune_learner(dls, 'segment', pretrained=data['ckpt'])
    assert [m.name for m in learn.metrics] == ['dice_multi', 'dice_1', 'dice_2']
    learn.fine_tune(1, freeze_epochs=0)
    assert set(learn.history[-1]) >= {'dice_multi', 'dice_1', 'dice_2'}
    with pytest.raises(ValueError, match='outside the class indices'):
        segmentation_dls(data['np'] / 'images', data['np'] / 'masks', crop=32, n_classes=3)   # 0/255 masks


def test_coords(data, tmp_path):
    dls = coords_dls(data['atoms'] / 'images', data['atoms'] / 'coords', radius=2, kind='gaussian', crop=32, bs=2)
    _, yb = dls.one_batch()
    assert 0 <= float(yb.min()) and float(yb.max()) <= 1 and 0 < float(yb.mean()) < 1
    bad = tmp_path / 'c.csv'; bad.write_text('row,col\n1,2\n')
    with pytest.raises(ValueError, match="'x' and 'y'"):
        read_coords(bad)
    ok = tmp_path / 'd.csv'; ok.write_text('X,Y\n10,20\n')
    assert read_coords(ok).tolist() == [[20.0, 10.0]]   # (y, x)
    with pytest.raises(ValueError, match='kind must be'):
        coords_dls(data['atoms'] / 'images', data['atoms'] / 'coords', kind='square')


def test_task_dls_mismatch(data):
    dls = paired_dls(data['den'] / 'images', data['den'] / 'targets', crop=32, bs=2)
    with pytest.raises(ValueError, match='segmentation DataLoaders'):
        finetune_learner(dls, 'segment', pretrained=data['ckpt'])


def test_freeze_trains_only_head_and_bn(data):
    dls = paired_dls(data['den'] / 'images', data['den'] / 'targets', crop=32, bs=2, epoch_size=4)
    learn = finetune_learner(dls, 'denoise_bg', pretrained=data['ckpt'])
    before = {n: p.detach().clone() for n, p in learn.model.named_parameters()}
    learn.fine_tune(0, freeze_epochs=1)
    changed = {n for n, p in learn.model.named_parameters() if not torch.equal(p, before[n])}
    assert 'head.weight' in changed and all(n.startswith('head.') or '.bn' in n for n in changed)
    assert learn.history[0]['phase'] == 'frozen'


def test_finetune_folders_and_predict_roundtrip(data, tmp_path):
    out = tmp_path / 'run'
    ck = finetune_folders('denoise_bg', data['den'] / 'images', data['den'] / 'targets', pretrained=data['ckpt'],
                          epochs=1, crop=32, bs=2, out=out, epoch_size=4)
    assert ck == out / 'model.pth' and (out / 'metrics.csv').exists()
    lines = (out / 'metrics.csv').read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith('epoch') and 'psnr' in lines[0]   # header + frozen + unfrozen
    assert sorted(p.name for p in out.iterdir()) == ['metrics.csv', 'model.pth', 'predictions.png']   # no state left
    rows = [line.split(',') for line in lines]
    assert rows[0][:2] == ['epoch', 'phase'] and [r[:2] for r in rows[1:]] == [['0', 'frozen'], ['1', 'unfrozen']]
    assert (out / 'predictions.png').read_bytes()[:4] == b'\x89PNG'
    ckd = load_checkpoint(ck, 'finetuned')
    assert ckd['extra']['task'] == 'denoise_bg' and ckd['model']['config']['n_out'] == 1
    assert ckd['extra']['normalisation']['method'] == 'minmax' and ckd['model']['config']['base_width'] == 4
    assert len(ckd['provenance']['history']) == 2 and 'psnr' in ckd['provenance']['metrics']
    with pytest.raises(FileExistsError, match='not empty'):
        finetune_folders('denoise_bg', data['den'] / 'images', data['den'] / 'targets', pretrained=data['ckpt'],
                         epochs=1, out=out)
    finetune_folders('denoise_bg', data['den'] / 'images', data['den'] / 'targets', pretrained=data['ckpt'],
                     epochs=1, crop=32, bs=2, out=out, epoch_size=2, overwrite=True)
    assert len((out / 'metrics.csv').read_text().splitlines()) == 3
    inp = tmp_path / 'inp'; inp.mkdir()
    emio.save_tiff(inp / 'a.tif', np.random.rand(37, 51))
    Image.fromarray((np.random.rand(30, 30) * 255).astype(np.uint8)).save(inp / 'b.png')
    outs = predict_files(ck, inp, tmp_path / 'pred')
    assert [o.name for o in outs] == ['a.tif', 'b.tif']
    assert emio.load_image(outs[0]).shape == (37, 51) and emio.load_image(outs[1]).shape == (30, 30)
    with pytest.raises(FileExistsError):
        predict_files(ck, inp, tmp_path / 'pred')
    assert len(predict_files(ck, inp, tmp_path / 'pred', overwrite=True)) == 2


def test_finetune_folders_segment_from_coords_random_init(data, tmp_path):
    ck = finetune_folders('segment', data['atoms'] / 'images', data['atoms'] / 'coords', pretrained=None,
                          arch='unet_2_44', epochs=1, crop=32, bs=2, out=tmp_path / 'seg', epoch_size=2)
    model, meta = load_finetuned(ck)
    assert meta['task'] == 'segment' and meta['transfer']['transferred'] == 0
    assert len((tmp_path / 'seg' / 'metrics.csv').read_text().splitlines()) == 2   # random init: no frozen epoch
    probs = predict_files(ck, data['atoms'] / 'images' / '0000.tif', tmp_path / 'p')
    p = emio.load_image(probs[0])
    assert p.shape == (64, 64) and 0 <= p.min() and p.max() <= 1


def test_finetune_folders_bce_and_polarity_augmentation(data, tmp_path):
    "loss='bce' and invert_p reach the learner and the training batches; bad values fail before anything is written."
    ck = finetune_folders('segment', data['atoms'] / 'images', data['atoms'] / 'coords', pretrained=None, arch='unet_2_44',
                          epochs=1, crop=32, bs=2, out=tmp_path / 'seg', epoch_size=2, loss='bce', invert_p=1.0)
    assert load_finetuned(ck)[1]['task'] == 'segment'
    from em_ssl.data import RandomInvert
    from em_ssl.labels import coords_dls
    dls = coords_dls(data['atoms'] / 'images', data['atoms'] / 'coords', crop=32, bs=2, epoch_size=2)
    torch.manual_seed(0); x0 = dls.train.one_batch()[0]
    dls.train.after_batch.add(RandomInvert(1.0))
    torch.manual_seed(0); x1 = dls.train.one_batch()[0]
    assert torch.allclose(x1, 1 - x0)   # the same crops, inverted
    for kw, msg in ((dict(invert_p=1.5), 'invert_p must be in'), (dict(loss='dice'), 'loss must be one of')):
        with pytest.raises(ValueError, match=msg):
            finetune_folders('segment', data['atoms'] / 'images', data['atoms'] / 'coords', pretrained=None, arch='unet_2_44',
                             epochs=1, crop=32, bs=2, out=tmp_path / 'bad', epoch_size=2, **kw)
        assert not (tmp_path / 'bad').exists()
    with pytest.raises(ValueError, match="contrast inversion is for segmentation"):
        finetune_folders('denoise', data['den'] / 'images', data['den'] / 'targets', pretrained=data['ckpt'], invert_p=0.5,
                         out=tmp_path / 'bad')
    assert not (tmp_path / 'bad').exists()


def test_predict_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        predict_files(tmp_path / 'missing.pth', data['np'] / 'images', tmp_path / 'o')
    with pytest.raises(CheckpointError, match='expected a finetuned checkpoint'):
        predict_files(data['ckpt'], data['np'] / 'images', tmp_path / 'o')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a torch checkpoint'):
        load_finetuned(tmp_path / 'junk.pth')
    with pytest.raises(ValueError, match='tile must be >= 128'):
        predict_files(data['ckpt'], data['np'] / 'images', tmp_path / 'o', tile=64)
    assert not (tmp_path / 'o').exists()


def test_tiled_prediction_matches_shape_and_values(data):
    model, _ = finetune_model('denoise', pretrained=data['ckpt'])
    img = lattice_image(256, seed=1)[:90, :250]
    whole = predict_array(model, img, 'denoise')
    tiled = predict_array(model, img, 'denoise', tile=128, overlap=48)   # overlap > receptive field radius (22 px)
    assert whole.shape == tiled.shape == (90, 250)
    inner = np.s_[:, 24:-24]   # the image borders see different padding (250 is padded to 252 when untiled)
    assert np.abs(whole - tiled)[inner].mean() < 0.02 * np.abs(whole).mean()


def test_single_image_validates_on_other_pixels(data, tmp_path):
    (tmp_path / 'i').mkdir(); (tmp_path / 'm').mkdir()
    f = sorted((data['np'] / 'images').iterdir())[0]
    (tmp_path / 'i' / f.name).write_bytes(f.read_bytes())
    (tmp_path / 'm' / f'{f.stem}.png').write_bytes((data['np'] / 'masks' / f'{f.stem}.png').read_bytes())
    dls = segmentation_dls(tmp_path / 'i', tmp_path / 'm', crop=32, bs=2)
    (tr,), (va,) = dls.train_ds.regions, dls.valid_ds.regions
    assert tr.image == va.image and (tr.x1 <= va.x0 or tr.y1 <= va.y0)   # disjoint regions of the one image


@pytest.mark.parametrize('kw, msg', [(dict(bs=0), 'bs must be'), (dict(epochs=0), 'epochs must be'),
                                     (dict(crop=8), 'crop must be'), (dict(lr=0), 'lr must be'),
                                     (dict(valid_pct=1), 'valid_pct must be'), (dict(n_classes=1), 'n_classes must be'),
                                     (dict(task='paint'), 'unknown task'), (dict(images='typo'), 'typo'),
                                     (dict(overwrite=True, resume=True), 'not both')])
def test_bad_input_touches_nothing(data, tmp_path, kw, msg):
    out = tmp_path / 'run'; out.mkdir(); (out / 'metrics.csv').write_text('old')
    args = dict(task='denoise_bg', images=data['den'] / 'images', targets=data['den'] / 'targets',
                pretrained=data['ckpt'], out=out, epochs=1, overwrite=True, crop=32, bs=2)
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        finetune_folders(**{**args, **kw})
    assert (out / 'metrics.csv').read_text() == 'old' and sorted(out.iterdir()) == [out / 'metrics.csv']
    with pytest.raises(ValueError, match='lr must be'):
        finetune_folders(**{**args, 'out': tmp_path / 'new', 'lr': -1})
    assert not (tmp_path / 'new').exists()


@pytest.mark.parametrize('epochs, freeze_epochs, phases', [(1, 1, ['frozen', 'unfrozen']), (2, 0, ['unfrozen', 'unfrozen'])])
def test_resume_after_interruption(data, tmp_path, monkeypatch, epochs, freeze_epochs, phases):
    "An interrupted run resumes from out/last_state.pth (between phases, or inside one) and ends like an uninterrupted one."
    from fastai.callback.core import Callback
    import em_ssl.finetune as ft

    class Crash(Callback):
        order = 99   # after TrainingCheckpoint saved the epoch
        def after_epoch(self): raise RuntimeError('simulated crash')
    args = dict(task='denoise_bg', images=data['den'] / 'images', targets=data['den'] / 'targets',
                pretrained=data['ckpt'], epochs=epochs, crop=32, bs=2, epoch_size=4, freeze_epochs=freeze_epochs)
    full = load_checkpoint(finetune_folders(**args, out=tmp_path / 'full'), 'finetuned')
    out = tmp_path / 'cut'
    orig = ft.finetune_learner
    monkeypatch.setattr(ft, 'finetune_learner', lambda *a, cbs=(), **k: orig(*a, cbs=[*cbs, Crash()], **k))
    with pytest.raises(RuntimeError, match='simulated crash'):
        finetune_folders(**args, out=out)   # crashes after the first epoch
    monkeypatch.setattr(ft, 'finetune_learner', orig)
    assert (out / STATE_FILE).exists() and len((out / 'metrics.csv').read_text().splitlines()) == 2
    with pytest.raises(FileExistsError, match='resume=True'):
        finetune_folders(**args, out=out)
    with pytest.raises(ValueError, match='other options'):
        finetune_folders(**{**args, 'bs': 4}, out=out, resume=True)
    ck = finetune_folders(**args, out=out, resume=True)
    assert ck == out / 'model.pth' and not (out / STATE_FILE).exists()
    assert len((out / 'metrics.csv').read_text().splitlines()) == 3
    got = load_checkpoint(ck, 'finetuned')
    assert [r['phase'] for r in got['provenance']['history']] == phases
    assert all(torch.equal(full['weights'][k], got['weights'][k]) for k in full['weights'])
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        finetune_folders(**args, out=out, resume=True)


def test_time_budget_stops_and_resumes(data, tmp_path):
    args = dict(task='denoise', images=data['den'] / 'images', targets=data['den'] / 'targets', pretrained=data['ckpt'],
                epochs=1, crop=32, bs=2, epoch_size=4, out=tmp_path / 'run')
    assert finetune_folders(**args, max_minutes=1e-9) == tmp_path / 'run' / STATE_FILE   # stops after one batch
    assert not (tmp_path / 'run' / 'model.pth').exists()
    assert finetune_folders(**args, resume=True) == tmp_path / 'run' / 'model.pth'


# ------------------------------------------------------------------ issue 9: learning with the CLI's defaults

def test_default_epoch_is_at_least_min_epoch_crops(data):
    dls = segmentation_dls(data['np'] / 'images', data['np'] / 'masks', crop=32, bs=4)
    assert len(dls.train_ds) == MIN_EPOCH_CROPS and len(dls.train) == MIN_EPOCH_CROPS // 4
    assert len(segmentation_dls(data['np'] / 'images', data['np'] / 'masks', crop=32, epoch_size=6).train_ds) == 6
    assert dls.class_freq.shape == (2,) and 0 < dls.class_freq[1] < 0.5


def test_masks_are_read_strictly(tmp_path):
    def save(name, a): Image.fromarray(np.array(a, np.uint8)).save(tmp_path / name); return tmp_path / name
    assert load_mask(save('a.png', [[0, 255], [0, 0]])).tolist() == [[0, 1], [0, 0]]
    assert load_mask(save('b.png', [[0, 1], [0, 0]])).tolist() == [[0, 1], [0, 0]]
    g = save('g.png', [[0, 128], [255, 0]])
    with pytest.raises(ValueError, match=r"g.png has values \[0, 128, 255\]: binary masks must be \{0,1\} or \{0,255\}; "
                                         r"for classes pass n_classes=3 with values 0..2"):
        load_mask(g)
    assert load_mask(save('c.png', [[0, 1], [2, 0]]), n_classes=3).dtype == np.int64
    with pytest.raises(ValueError, match='outside the class indices 0..2'):
        load_mask(g, n_classes=3)


def test_a_stray_csv_does_not_switch_to_coordinates(data, tmp_path):
    masks = tmp_path / 'masks'; masks.mkdir()
    for f in (data['np'] / 'masks').iterdir(): (masks / f.name).write_bytes(f.read_bytes())
    (masks / 'notes.csv').write_text('x,y\n1,2\n')
    assert targets_kind(data['np'] / 'images', masks) == 'masks'
    assert targets_kind(data['atoms'] / 'images', data['atoms'] / 'coords') == 'coords'
    (masks / '0001.csv').write_text('x,y\n1,2\n')
    with pytest.raises(ValueError, match=r'both mask images \(0000.png.*and CSV coordinates \(0001.csv'):
        targets_kind(data['np'] / 'images', masks)
    with pytest.raises(ValueError, match='both mask images'):
        finetune_folders('segment', data['np'] / 'images', masks, pretrained=data['ckpt'], out=tmp_path / 'o')
    assert not (tmp_path / 'o').exists()


def test_segmentation_loss_penalises_empty_predictions():
    y = torch.zeros(2, 1, 16, 16); y[:, :, 4:6, 4:6] = 1   # 1.6 % foreground
    loss = SegmentationLoss()
    assert loss(torch.where(y > 0, 9., -9.), y) < 0.01 and loss(torch.full_like(y, -9.), y) > 0.9   # the Dice term
    t = torch.randint(0, 3, (2, 8, 8))
    assert float(SegmentationLoss(3)(torch.zeros(2, 3, 8, 8), t)) > 1


def test_collapse_warning(data, capsys):
    dls = segmentation_dls(data['np'] / 'images', data['np'] / 'masks', crop=32, bs=2, epoch_size=2)
    learn = finetune_learner(dls, 'segment', pretrained=data['ckpt'])
    with torch.no_grad(): learn.model.head.weight.zero_(); learn.model.head.bias.fill_(50.)   # foreground everywhere
    with pytest.warns(PredictionCollapseWarning, match=r'foreground predicted on 100.00% .*--epoch-size'):
        learn.fine_tune(1, base_lr=1e-12, freeze_epochs=1)
    out = capsys.readouterr().out
    assert out.count('WARNING: the predictions collapsed') == 1   # once, after the last phase


def test_lr_find_and_random_init_without_arch(data, tmp_path, capsys):
    assert parse_lr('find') == 'find' and parse_lr('1e-3') == 1e-3
    with pytest.raises(ValueError, match="lr must be a number > 0 or 'find'"):
        parse_lr('fast')
    ck = finetune_folders('denoise', data['den'] / 'images', data['den'] / 'targets', pretrained=None, epochs=1,
                          crop=32, bs=2, epoch_size=2, lr='find', out=tmp_path / 'r')
    out = capsys.readouterr().out
    assert 'lr_find suggests lr = ' in out and '2 crops of 32 px per epoch = 1 steps of 2, 0 + 1 epochs = 1 steps' in out
    meta = load_finetuned(ck)[1]
    assert meta['model']['config']['base_width'] == load_checkpoint('default', 'pretrained')['model']['config']['base_width']
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['metrics.csv', 'model.pth', 'predictions.png']
