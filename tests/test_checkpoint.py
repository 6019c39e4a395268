"Tests of em_ssl.checkpoint: the tagged format, safe loading, every error, the legacy converters and the bundled weights."
import ast, json, os, pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import em_ssl.checkpoint as C
from em_ssl.checkpoint import (BUNDLED, CHECKPOINT_FORMAT, LEGACY_COMPLETION, WEIGHTS_DIR, CheckpointError,
                               convert_checkpoint, describe_checkpoint, load_checkpoint, load_model, read_torch,
                               rebuild, resolve_checkpoint, save_checkpoint, to_plain, weights_digest, write_torch)
from em_ssl.models import build_model, model_config

TINY = {'base_width': 4}


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return build_model('unet_2_44', **TINY).eval()


@pytest.fixture
def ckfile(tmp_path, unet):
    return save_checkpoint(tmp_path / 'unet.pth', unet, 'unet_2_44', TINY, 'pretrained',
                           provenance={'data': ['imgs/'], 'command': 'em-ssl pretrain imgs/', 'metrics': {'l1': 0.25}})


def one_line_error(fn, path, *problems, exc=CheckpointError):
    with pytest.raises(exc) as e: fn()
    msg = str(e.value)
    assert '\n' not in msg and str(path) in msg, msg
    assert 'weights_only=False' not in msg and 'weights_only` set to `False' not in msg, msg
    for p in problems: assert p in msg, msg
    return msg


def legacy_dict(ck: dict, fmt: str) -> dict:
    "The layout the old writers produced for the content of a new-format dict `ck`."
    w, m, x, pv = ck['weights'], ck['model'], ck['extra'], ck['provenance']
    if fmt == LEGACY_COMPLETION:
        cfg = {k: v for k, v in m['config'].items() if k not in ('residual', 'base_blur')}
        return {'config': cfg, 'state_dict': {k.removeprefix('gen.'): v for k, v in w.items()}, 'meta': {},
                'gap_fill': {'method': 'push_pull', 'residual': m['config']['residual'], 'base_blur': m['config']['base_blur']}}
    if fmt == 'em_ssl.pretrained/1':
        c = x.get('critic')
        return {'format': fmt, 'arch': m['name'], 'arch_kwargs': m['config'], 'generator': w, 'critic': c and c['weights'],
                'critic_kwargs': {k: v for k, v in (c or {}).get('config', {}).items() if k != 'n_in'},
                'pretext': x.get('pretext'), 'head_prefix': 'head.', 'em_ssl_version': '0.1.0',
                'history': pv.get('history', []), 'extra': {'data': pv.get('data', []), 'command': pv.get('command', ''), 'crop': 64}}
    if fmt == 'em_ssl.pretrain_state/1':
        return {'format': fmt, 'epoch': 4, 'arch': m['name'], 'arch_kwargs': m['config'], 'generator': w, 'critic': w,
                'gen_opt': {'state': {}, 'hypers': [{'lr': 2e-4}]}, 'crit_opt': {'state': {}, 'param_groups': []},
                'history': [{'epoch': 3, 'valid_loss': 0.5}], 'extra': {'data': ['imgs/'], 'command': 'x'}}
    if fmt == 'em_ssl.finetuned/1':
        return {'format': fmt, 'task': 'segment', 'arch': m['name'], 'arch_kwargs': m['config'], 'n_out': 1, 'n_classes': 2,
                'state_dict': w, 'normalisation': {'method': 'minmax'}, 'divisor': 4, 'crop': 64, 'transfer': {},
                'history': [{'epoch': 0, 'valid_loss': 0.5, 'dice': 0.75}], 'em_ssl_version': '0.1.0'}
    raise ValueError(fmt)


# ------------------------------------------------------------------ saving
def test_round_trip(ckfile, unet):
    raw = torch.load(ckfile, weights_only=True)
    assert raw['format'] == CHECKPOINT_FORMAT and raw['version'] == 1 and raw['kind'] == 'pretrained'
    assert set(raw) == {'format', 'version', 'kind', 'model', 'weights', 'state', 'provenance', 'extra'}
    assert raw['model'] == {'name': 'unet_2_44', 'config': TINY} and raw['state'] is None
    assert raw['provenance']['created'] and raw['provenance']['em_ssl_version']
    model, ck = load_model(ckfile, 'pretrained')
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad(): assert torch.equal(model(x), unet(x))
    assert not model.training and ck['provenance']['metrics'] == {'l1': 0.25}


def test_save_infers_registry_spec_and_validates(tmp_path, unet):
    f = save_checkpoint(tmp_path / 'a.pth', unet, kind='finetuned')
    assert load_checkpoint(f)['model'] == model_config(unet)
    one_line_error(lambda: save_checkpoint(f, unet, kind='finetuned'), f, '--overwrite', exc=FileExistsError)
    for kw, problem in [(dict(kind='weights'), "unknown kind 'weights'"), (dict(kind='training_state'), 'needs state'),
                        (dict(kind='pretrained', extra={'f': print}), "extra['f'] is a builtins"),
                        (dict(kind=None), 'unknown kind None')]:
        one_line_error(lambda: save_checkpoint(tmp_path / 'b.pth', unet, **kw), tmp_path / 'b.pth', problem)
    one_line_error(lambda: save_checkpoint(tmp_path / 'b.pth', nn.Linear(2, 2), kind='pretrained'), tmp_path / 'b.pth',
                   'was not built by em_ssl.models.build_model')
    assert not (tmp_path / 'b.pth').exists()


def test_training_state_round_trip(tmp_path, unet):
    opt = torch.optim.Adam(unet.parameters(), 1e-3)
    unet(torch.rand(1, 1, 32, 32)).mean().backward(); opt.step()
    state = {'epoch': 3, 'optimizer': opt.state_dict(), 'rng': torch.get_rng_state(), 'callbacks': {'alrc': {'mu1': 1.0}}}
    f = save_checkpoint(tmp_path / 's.pth', unet, 'unet_2_44', TINY, 'training_state', state=state)
    ck = load_checkpoint(f, 'training_state')
    opt2 = torch.optim.Adam(build_model('unet_2_44', **TINY).parameters(), 1e-3)
    opt2.load_state_dict(ck['state']['optimizer'])
    assert ck['state']['epoch'] == 3 and torch.equal(ck['state']['rng'], state['rng'])


def test_to_plain_and_write_torch(tmp_path):
    from fastcore.foundation import L
    p = to_plain({'h': L([np.float32(1.5)]), 'p': Path('a'), 'a': np.zeros(2)})
    assert p['h'] == [1.5] and type(p['h']) is list and p['p'] == 'a' and torch.equal(p['a'], torch.zeros(2, dtype=torch.float64))
    f = write_torch({'x': 1}, tmp_path / 'w.pth')
    assert torch.load(f, weights_only=True) == {'x': 1} and os.listdir(tmp_path) == ['w.pth']
    assert f.stat().st_mode & 0o644 == 0o644


# ------------------------------------------------------------------ reading: every error is one line naming the file
class Malicious:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


class Custom: pass


def test_malicious_pickles_never_run(tmp_path, unet):
    marker = tmp_path / 'marker'
    with open(tmp_path / 'evil.pkl', 'wb') as fh: pickle.dump(Malicious(marker), fh)
    torch.save({'format': CHECKPOINT_FORMAT, 'weights': unet.state_dict(), 'x': Malicious(marker)}, tmp_path / 'evil.pth')
    for name, problem in [('evil.pkl', 'plain Python pickle'), ('evil.pth', 'contains Python objects (posix.system)')]:
        for fn in (read_torch, load_checkpoint, load_model, describe_checkpoint):
            one_line_error(lambda: fn(tmp_path / name), tmp_path / name, problem, 'never unpickles Python objects')
    assert not marker.exists()


def test_unreadable_files(tmp_path, ckfile):
    (tmp_path / 'empty.pth').write_bytes(b'')
    data = ckfile.read_bytes()
    (tmp_path / 'trunc.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'text.pth').write_text('hello world')
    with open(tmp_path / 'plain.pkl', 'wb') as fh: pickle.dump({'weights': [1.0]}, fh)
    torch.save({'m': Custom()}, tmp_path / 'objects.pth')
    torch.save({'a': np.ones(2)}, tmp_path / 'numpy.pth')
    for name, problem in [('empty.pth', 'empty (0 bytes)'), ('trunc.pth', 'truncated or damaged'),
                          ('text.pth', 'not a torch checkpoint file'), ('plain.pkl', 'plain Python pickle'),
                          ('objects.pth', 'contains Python objects (test_checkpoint.Custom)'),
                          ('numpy.pth', 'contains Python objects (numpy.')]:
        one_line_error(lambda: load_checkpoint(tmp_path / name), tmp_path / name, problem)
    one_line_error(lambda: load_checkpoint(tmp_path / 'missing.pth'), tmp_path / 'missing.pth', 'not found', exc=FileNotFoundError)
    one_line_error(lambda: load_checkpoint(tmp_path), tmp_path, 'is a folder')


@pytest.mark.parametrize('change,problem', [
    (lambda d: {**d, 'format': 'other/1'}, "unknown checkpoint format 'other/1'"),
    (lambda d: {**d, 'version': 7}, 'newer em_ssl (checkpoint version 7'),
    (lambda d: {**d, 'version': True}, 'invalid checkpoint version'),
    (lambda d: {k: v for k, v in d.items() if k != 'model'}, "lacks the 'model' entry"),
    (lambda d: {**d, 'kind': 'other'}, "unknown checkpoint kind 'other'"),
    (lambda d: {**d, 'model': {'config': {}}}, "'model' entry must be"),
    (lambda d: {**d, 'weights': {}}, "'weights' entry must be a non-empty state dict"),
    (lambda d: {'format': 'em_ssl.finetuned/1', 'arch': 'unet_2_44'}, "lacks the 'state_dict', 'task', 'n_out' entries"),
    (lambda d: {'format': 'em_ssl.pretrained/1', 'arch': 'unet_2_44', 'generator': d['weights'], 'arch_kwargs': [1]},
     "'arch_kwargs' entry must be a dict"),
    (lambda d: {'config': {}, 'state_dict': None}, "'weights' entry must be"),
    (lambda d: [d], 'holds a list, not a dict'),
    (lambda d: {'a': 1}, "no 'format' tag"),
    (lambda d: d['weights'], 'fastai Learner.save file'),
    (lambda d: {'model': d['weights'], 'opt': {}}, 'fastai Learner.save file'),
    (lambda d: {'epoch': 1, 'torch_rng': torch.get_rng_state(), 'stage': 1}, 'fastai Learner.save file'),
])
def test_refused_contents(tmp_path, ckfile, change, problem):
    f = write_torch(change(torch.load(ckfile, weights_only=True)), tmp_path / 'bad.pth')
    one_line_error(lambda: load_checkpoint(f), f, problem)


def test_wrong_kind(ckfile):
    one_line_error(lambda: load_checkpoint(ckfile, 'completion'), ckfile, 'is a pretrained checkpoint, expected a completion checkpoint')
    one_line_error(lambda: load_model(ckfile, ('finetuned', 'training_state')), ckfile,
                   'expected a finetuned or a training state checkpoint')
    assert load_checkpoint(ckfile, ('pretrained', 'finetuned'))['kind'] == 'pretrained'
    with pytest.raises(CheckpointError, match="unknown checkpoint kind 'model'"): load_checkpoint(ckfile, 'model')


@pytest.mark.parametrize('name,config,problem', [
    ('unet_2_44', {'base_width': 8}, 'do not fit model'), ('unet_3_96', TINY, 'tensors missing'),
    ('nosuchnet', {}, "cannot build model 'nosuchnet'"), ('unet_2_44', {'depth': 1}, "cannot build model 'unet_2_44'")])
def test_weights_that_do_not_fit(tmp_path, unet, name, config, problem):
    f = save_checkpoint(tmp_path / 'm.pth', unet, name, config, 'pretrained')
    one_line_error(lambda: load_model(f), f, problem)


# ------------------------------------------------------------------ names
def test_resolve_names(ckfile):
    assert resolve_checkpoint('default', 'completion') == WEIGHTS_DIR / 'completion_small.pth'
    assert resolve_checkpoint('default', 'pretrained') == WEIGHTS_DIR / 'ssl_unet_small.pth'
    assert resolve_checkpoint('ssl_unet_small.pth') == resolve_checkpoint('ssl_unet_small')
    assert resolve_checkpoint(str(ckfile)) == ckfile
    with pytest.raises(CheckpointError, match='give the kind'): resolve_checkpoint('default')
    with pytest.raises(FileNotFoundError, match='completion_small, partial_scan_small, ssl_unet_small'): resolve_checkpoint('nope')


# ------------------------------------------------------------------ legacy formats
@pytest.mark.parametrize('fmt,kind', [('em_ssl.pretrained/1', 'pretrained'), ('em_ssl.pretrain_state/1', 'training_state'),
                                      ('em_ssl.finetuned/1', 'finetuned')])
def test_legacy_tagged_formats(tmp_path, ckfile, fmt, kind):
    new = load_checkpoint(ckfile)
    f = write_torch(legacy_dict(new, fmt), tmp_path / 'old.pth')
    model, ck = load_model(f, kind)
    assert ck['format'] == CHECKPOINT_FORMAT and ck['provenance']['converted_from'] == fmt
    assert weights_digest(ck['weights']) == weights_digest(new['weights'])
    if kind == 'finetuned':
        assert ck['extra']['task'] == 'segment' and ck['extra']['n_classes'] == 2 and ck['model']['config']['n_out'] == 1
        assert ck['provenance']['metrics'] == {'valid_loss': 0.5, 'dice': 0.75}
    if kind == 'training_state':
        assert ck['state']['epoch'] == 4 and ck['state']['optimizer']['hypers'] == [{'lr': 2e-4}]
        assert ck['provenance']['data'] == ['imgs/'] and ck['provenance']['command'] == 'x'
    g = convert_checkpoint(f, tmp_path / 'new.pth')
    assert torch.load(g, weights_only=True)['format'] == CHECKPOINT_FORMAT
    assert weights_digest(load_checkpoint(g)['weights']) == weights_digest(new['weights'])


def test_legacy_completion_plain_generator(tmp_path):
    gen = build_model('partial_scan', size='tiny')
    cfg = {k: v for k, v in model_config(gen)['config'].items()}
    f = write_torch({'config': cfg, 'state_dict': gen.state_dict(), 'meta': {'note': 'x'}, 'gap_fill': None}, tmp_path / 'g.pth')
    model, ck = load_model(f, 'completion')
    assert ck['model']['name'] == 'partial_scan' and ck['provenance']['note'] == 'x' and ck['extra'] == {}
    assert weights_digest(model.state_dict()) == weights_digest(gen.state_dict())


# ------------------------------------------------------------------ bundled weights
@pytest.mark.parametrize('name', ['partial_scan_small', 'ssl_unet_small'])   # the two converted from legacy formats
def test_bundled_weights_are_converted_and_bit_identical(tmp_path, name):
    kind = BUNDLED[name]
    assert torch.load(WEIGHTS_DIR / f'{name}.pth', weights_only=True)['format'] == CHECKPOINT_FORMAT
    model, new = load_model(name, kind)
    rec = json.loads((WEIGHTS_DIR / f'{name}.json').read_text())
    conv = rec['conversion']
    assert conv['converted_by'] == 'em_ssl.checkpoint.convert_checkpoint' and conv['weights_bit_identical'] is True
    assert conv['weights_sha256'] == weights_digest(new['weights']) == weights_digest(model.state_dict())
    assert rec['format'] == CHECKPOINT_FORMAT and new['provenance']['record']['command']
    fmt = LEGACY_COMPLETION if kind == 'completion' else 'em_ssl.pretrained/1'
    f = write_torch(legacy_dict(new, fmt), tmp_path / f'{name}_legacy.pth')   # the legacy path, from the converted weights
    old_model, old = load_model(f, kind)
    assert old['provenance']['converted_from'] == fmt
    assert all(torch.equal(old['weights'][k], v) and old['weights'][k].dtype == v.dtype for k, v in new['weights'].items())
    x = torch.rand(1, 2 if kind == 'completion' else 1, 64, 64)
    with torch.no_grad(): assert torch.equal(old_model(x), model(x))


def test_default_completion_model_matches_its_record():
    model, ck = load_model('default', 'completion')
    rec = json.loads((WEIGHTS_DIR / 'completion_small.json').read_text())
    assert ck['model']['name'] == 'fill_refiner' and rec['weights_sha256'] == weights_digest(ck['weights'])
    assert rec['size_bytes'] == (WEIGHTS_DIR / 'completion_small.pth').stat().st_size
    assert not any('validation_only' in f for f in rec['data']['files'])


@pytest.mark.parametrize('name', [n for n, k in BUNDLED.items() if k == 'pretrained' and n != 'ssl_unet_small'])
def test_bundled_pretrained_generator_matches_its_record(name):
    "The record beside a bundled generator names its weights, its data (never the evaluation sets) and its licenses."
    ck = load_checkpoint(name, 'pretrained')
    rec = json.loads((WEIGHTS_DIR / f'{name}.json').read_text())
    assert rec['weights_sha256'] == weights_digest(ck['weights']) and rec['arch'] == ck['model']['name']
    assert rec['size_bytes'] == (WEIGHTS_DIR / f'{name}.pth').stat().st_size
    assert rec['data']['labels_used'] is False and 'validation_only' in rec['data']['never_used']
    assert (WEIGHTS_DIR / f'{name}_DATA_LICENSES.md').is_file() and rec['commands']


def test_bundled_critic_rebuilds():
    ck = load_checkpoint('ssl_unet_small', 'pretrained')
    c = ck['extra']['critic']
    critic = rebuild(c['name'], c['config'], c['weights'], 'critic')
    assert critic(torch.rand(1, 2, 64, 64)).ndim == 4


def test_describe(tmp_path, ckfile):
    d = describe_checkpoint(ckfile)
    for line in ('format: em_ssl.checkpoint version 1', 'kind: pretrained', 'model: unet_2_44', 'parameters',
                 'training state: none', 'data: imgs/', 'command: em-ssl pretrain imgs/', 'metrics: l1=0.25', 'created: '):
        assert line in d, d
    d = describe_checkpoint('partial_scan_small')
    assert 'kind: completion' in d and '262,994 parameters' in d and 'converted from: ' in d
    f = write_torch(legacy_dict(load_checkpoint(ckfile), 'em_ssl.pretrain_state/1'), tmp_path / 'state.pth')
    assert 'em_ssl.pretrain_state/1 (legacy' in describe_checkpoint(f) and 'training state: yes (epoch=4' in describe_checkpoint(f)
    assert len(d.splitlines()) < 20


# ------------------------------------------------------------------ source rules
def test_module_rules():
    src = Path(C.__file__).read_text()
    assert len(src.splitlines()) < 500
    tree = ast.parse(src)
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == 'torch.load']
    assert len(loads) == 1 and any(k.arg == 'weights_only' and ast.unparse(k.value) == 'True' for k in loads[0].keywords)
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.module or '').startswith(('em_ssl', '.')):
            assert not any(a.name.startswith('_') and a.name != '__version__' for a in n.names), ast.unparse(n)
