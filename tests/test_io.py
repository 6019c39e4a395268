"Tests for em_ssl.io: readers for every format, bad input, normalisation, tiling, dihedral, folders, saving."
import json
import struct
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import em_ssl.io as io
from em_ssl.io import (DIHEDRAL_COUNT, MICROGRAPH_EXTENSIONS, UNIFORM_VALUE, CorruptFileError,
                       InvalidImageError, Micrograph, MicrographError, MissingDependencyError,
                       UnsupportedFormatError, check_image, count_pages, crop_origins, dihedral, dihedral_inverse,
                       get_micrograph_files, image_shape, load_image, load_micrograph, minmax, normalize, pad_to,
                       save_tiff)


def ramp(h=24, w=32, dtype=np.float32, scale=1.0):
    "Asymmetric test image: distinct values (modulo 256 for uint8)."
    vals = np.arange(h * w).reshape(h, w) * scale
    return (vals % 256 if dtype == np.uint8 else vals).astype(dtype)


def truncate(path: Path, frac=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * frac)])
    return path


# ---------------------------------------------------------------- exceptions
def test_exception_hierarchy():
    for cls in (UnsupportedFormatError, CorruptFileError, InvalidImageError):
        assert issubclass(cls, MicrographError) and issubclass(cls, ValueError)
    assert issubclass(MissingDependencyError, ImportError)


# ---------------------------------------------------------------- TIFF
@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64])
def test_tiff_dtypes(tmp_path, dtype):
    img = ramp(20, 30, scale=0.5 if np.dtype(dtype).kind == 'f' else 1).astype(dtype)
    if dtype == np.int16: img = img - 300
    tifffile.imwrite(tmp_path / 'a.tif', img)
    m = load_micrograph(tmp_path / 'a.tif')
    assert isinstance(m, Micrograph) and m.data.dtype == np.float32 and m.data.shape == (20, 30)
    np.testing.assert_array_equal(m.data, img.astype(np.float32))
    assert m.path == tmp_path / 'a.tif' and m.metadata['original_dtype'] == np.dtype(dtype).name
    assert m.pixel_size is None and m.unit is None


def test_tiff_multipage(tmp_path):
    stack = np.stack([ramp() * k for k in range(1, 6)])
    tifffile.imwrite(tmp_path / 's.tiff', stack)
    np.testing.assert_array_equal(load_image(tmp_path / 's.tiff', page=2), stack[2])
    np.testing.assert_array_equal(load_image(tmp_path / 's.tiff', page=-1), stack[4])
    with pytest.raises(InvalidImageError, match='holds 5 pages.*page=0..4'):
        load_micrograph(tmp_path / 's.tiff')
    with pytest.raises(InvalidImageError, match='out of range'):
        load_micrograph(tmp_path / 's.tiff', page=5)
    with pytest.raises(TypeError, match='page'):
        load_micrograph(tmp_path / 's.tiff', page=1.5)


def test_tiff_single_page_accepts_page0_only(tmp_path):
    tifffile.imwrite(tmp_path / 'a.tif', ramp())
    np.testing.assert_array_equal(load_image(tmp_path / 'a.tif', page=0), ramp())
    with pytest.raises(InvalidImageError, match='out of range'):
        load_image(tmp_path / 'a.tif', page=1)


def test_tiff_rgb_gray_and_colour(tmp_path):
    g = ramp(dtype=np.uint8)
    tifffile.imwrite(tmp_path / 'rgb.tif', np.stack([g, g, g], -1), photometric='rgb')
    np.testing.assert_allclose(load_image(tmp_path / 'rgb.tif'), g, atol=1e-3)
    # planar RGB (3, H, W), as tifffile writes a 3-page-looking array
    tifffile.imwrite(tmp_path / 'planar.tif', np.stack([g, g, g]), photometric='rgb', planarconfig='separate')
    np.testing.assert_allclose(load_image(tmp_path / 'planar.tif'), g, atol=1e-3)
    col = np.stack([g, g // 2, np.zeros_like(g)], -1)
    tifffile.imwrite(tmp_path / 'col.tif', col, photometric='rgb')
    with pytest.raises(InvalidImageError, match="colour image.*color='luminance'"):
        load_micrograph(tmp_path / 'col.tif')
    lum = load_image(tmp_path / 'col.tif', color='luminance')
    np.testing.assert_allclose(lum, 0.299 * g + 0.587 * (g // 2), rtol=1e-5)


def test_tiff_palette(tmp_path):
    idx = (ramp() % 256).astype(np.uint8)
    ramp16 = np.arange(256, dtype=np.uint16) * 257
    tifffile.imwrite(tmp_path / 'pal.tif', idx, photometric='palette', colormap=np.stack([ramp16] * 3))
    np.testing.assert_array_equal(load_image(tmp_path / 'pal.tif'), idx.astype(np.float32) * 257)
    tifffile.imwrite(tmp_path / 'palc.tif', idx, photometric='palette',
                     colormap=np.stack([ramp16, ramp16[::-1], ramp16]))
    with pytest.raises(InvalidImageError, match='colour'):
        load_image(tmp_path / 'palc.tif')


def test_tiff_lzw_via_pillow_fallback(tmp_path):
    "LZW needs imagecodecs in tifffile; the loader falls back to Pillow (palette LZW as in real data too)."
    idx = (ramp() % 256).astype(np.uint8)
    Image.fromarray(idx).save(tmp_path / 'lzw.tif', compression='tiff_lzw')
    np.testing.assert_array_equal(load_image(tmp_path / 'lzw.tif'), idx)
    p = Image.fromarray(idx, mode='L').convert('P')
    p.putpalette([v for i in range(256) for v in (i, i, i)])
    p.save(tmp_path / 'lzwpal.tif', compression='tiff_lzw')
    out = load_image(tmp_path / 'lzwpal.tif')
    assert out.shape == idx.shape and np.corrcoef(out.ravel(), idx.ravel())[0, 1] > 0.999


def test_tiff_imagej_calibration(tmp_path):
    tifffile.imwrite(tmp_path / 'ij.tif', ramp(), imagej=True, resolution=(2., 2.), metadata={'unit': 'nm'})
    m = load_micrograph(tmp_path / 'ij.tif')
    assert m.pixel_size == pytest.approx(0.5) and m.unit == 'nm'
    tifffile.imwrite(tmp_path / 'um.tif', ramp(), imagej=True, resolution=(10., 10.),
                     metadata={'unit': '\\u00B5m'})
    m = load_micrograph(tmp_path / 'um.tif')
    assert m.pixel_size == pytest.approx(0.1) and m.unit == 'µm'


def test_tiff_resolution_units(tmp_path):
    tifffile.imwrite(tmp_path / 'cm.tif', ramp(), resolution=(1e6, 1e6), resolutionunit='CENTIMETER')
    m = load_micrograph(tmp_path / 'cm.tif')
    assert m.pixel_size == pytest.approx(10.) and m.unit == 'nm'  # 1e-6 cm = 10 nm
    tifffile.imwrite(tmp_path / 'dpi.tif', ramp(), resolution=(72., 72.), resolutionunit='INCH')
    assert load_micrograph(tmp_path / 'dpi.tif').pixel_size is None  # print DPI is not a calibration


def test_tiff_ome_calibration(tmp_path):
    tifffile.imwrite(tmp_path / 'o.ome.tif', ramp(), ome=True,
                     metadata={'PhysicalSizeX': 0.02, 'PhysicalSizeXUnit': 'µm', 'axes': 'YX'})
    m = load_micrograph(tmp_path / 'o.ome.tif')
    assert m.pixel_size == pytest.approx(0.02) and m.unit == 'µm'


# ---------------------------------------------------------------- PNG / JPEG / BMP
def test_png_modes(tmp_path):
    g8 = (ramp() % 256).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / 'l.png')
    np.testing.assert_array_equal(load_image(tmp_path / 'l.png'), g8)
    g16 = ramp(dtype=np.uint16, scale=60)
    Image.fromarray(g16).save(tmp_path / 'i16.png')
    np.testing.assert_array_equal(load_image(tmp_path / 'i16.png'), g16)
    Image.fromarray(np.stack([g8] * 3, -1)).save(tmp_path / 'rgb.png')
    np.testing.assert_allclose(load_image(tmp_path / 'rgb.png'), g8, atol=1e-3)
    Image.fromarray(np.stack([g8] * 3 + [np.full_like(g8, 255)], -1)).save(tmp_path / 'rgba.png')
    np.testing.assert_allclose(load_image(tmp_path / 'rgba.png'), g8, atol=1e-3)
    Image.fromarray(g8).convert('LA').save(tmp_path / 'la.png')
    np.testing.assert_array_equal(load_image(tmp_path / 'la.png'), g8)
    Image.fromarray(g8 > 100).save(tmp_path / 'bin.png')
    np.testing.assert_array_equal(load_image(tmp_path / 'bin.png') > 0, g8 > 100)
    Image.fromarray(g8).save(tmp_path / 'a.bmp')
    np.testing.assert_array_equal(load_image(tmp_path / 'a.bmp'), g8)


def test_png_palette_and_colour(tmp_path):
    g8 = (ramp() % 256).astype(np.uint8)
    p = Image.fromarray(g8).convert('P')
    p.putpalette([v for i in range(256) for v in (i, i, i)])
    p.save(tmp_path / 'p.png')
    np.testing.assert_allclose(load_image(tmp_path / 'p.png'), np.asarray(p.convert('L')), atol=1e-3)
    col = np.stack([g8, 255 - g8, g8 // 3], -1)
    Image.fromarray(col).save(tmp_path / 'c.png')
    with pytest.raises(InvalidImageError, match="color='luminance'"):
        load_image(tmp_path / 'c.png')
    np.testing.assert_allclose(load_image(tmp_path / 'c.png', color='luminance'),
                               col.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), rtol=1e-5)
    with pytest.raises(ValueError, match='color must be'):
        load_image(tmp_path / 'c.png', color='bogus')


def test_jpeg_gray_and_rgb_gray(tmp_path):
    g8 = (128 + 100 * np.sin(ramp() / 40)).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / 'g.jpg', quality=95)
    out = load_image(tmp_path / 'g.jpeg' if False else tmp_path / 'g.jpg')
    assert out.shape == g8.shape and np.abs(out - g8).mean() < 3
    Image.fromarray(np.stack([g8] * 3, -1)).save(tmp_path / 'rgb.JPEG', quality=75)  # chroma noise tolerated
    out = load_image(tmp_path / 'rgb.JPEG')
    assert out.shape == g8.shape and np.abs(out - g8).mean() < 3


# ---------------------------------------------------------------- NPY
def test_npy(tmp_path):
    np.save(tmp_path / 'a.npy', ramp(dtype=np.float64))
    np.testing.assert_array_equal(load_image(tmp_path / 'a.npy'), ramp())
    np.save(tmp_path / 'i.npy', ramp(dtype=np.int64))
    assert load_image(tmp_path / 'i.npy').dtype == np.float32
    np.save(tmp_path / 's.npy', np.stack([ramp(), -ramp()]))
    np.testing.assert_array_equal(load_image(tmp_path / 's.npy', page=1), -ramp())
    with pytest.raises(InvalidImageError, match='holds 2 pages'):
        load_image(tmp_path / 's.npy')


@pytest.mark.parametrize('arr,msg', [(np.arange(5.), '2-D'), (np.zeros((2, 3, 4, 5)), 'must be a 2-D array'),
                                     (np.zeros((0, 5)), 'empty'), (np.full((4, 4), np.nan), 'no finite'),
                                     (np.ones((4, 4), np.complex64), 'complex')])
def test_npy_bad_arrays(tmp_path, arr, msg):
    np.save(tmp_path / 'bad.npy', arr)
    with pytest.raises(InvalidImageError, match=msg):
        load_micrograph(tmp_path / 'bad.npy')


def test_npy_object_array_refused(tmp_path):
    np.save(tmp_path / 'obj.npy', np.array([[{}, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match='obj.npy'):
        load_micrograph(tmp_path / 'obj.npy')


# ---------------------------------------------------------------- MRC
def test_mrc(tmp_path):
    mrcfile = pytest.importorskip('mrcfile')
    with mrcfile.new(tmp_path / 'a.mrc') as mrc:
        mrc.set_data(ramp())
        mrc.voxel_size = 1.5
    m = load_micrograph(tmp_path / 'a.mrc')
    np.testing.assert_array_equal(m.data, ramp())
    assert m.pixel_size == pytest.approx(1.5) and m.unit == 'Å'
    with mrcfile.new(tmp_path / 's.mrcs') as mrc:
        mrc.set_data(np.stack([ramp(), 2 * ramp(), 3 * ramp()]).astype(np.int16))
    np.testing.assert_array_equal(load_image(tmp_path / 's.mrcs', page=2), 3 * ramp())
    with pytest.raises(InvalidImageError, match='holds 3 pages'):
        load_image(tmp_path / 's.mrcs')
    assert load_micrograph(tmp_path / 's.mrcs', page=0).pixel_size is None  # voxel size 0 = uncalibrated


# ---------------------------------------------------------------- EMD (real files written here)
def _berkeley(path, data, scale=0.5, units='nm'):
    from rsciio.emd import file_writer
    names = ['t', 'y', 'x'][-data.ndim:]
    axes = [dict(name=n, scale=scale if n != 't' else 1., offset=0., size=s, units=units if n != 't' else 's',
                 navigate=False) for n, s in zip(names, data.shape)]
    file_writer(str(path), dict(data=data, axes=axes, original_metadata={},
                                metadata={'General': {'title': 'img'}, 'Signal': {'signal_type': ''}}))


def _velox(path, frames, pixel_m=2e-10, detector='HAADF'):
    "Minimal Velox EMD layout: Version, Data/Image/<id>/Data (y, x, frame) and JSON Metadata columns."
    import h5py
    with h5py.File(path, 'w') as f:
        f.create_dataset('Version', data=np.array([json.dumps({'format': 'Velox', 'version': 2}).encode()]))
        grp = f.create_group('Data/Image/0123456789abcdef')
        grp.create_dataset('Data', data=np.moveaxis(frames, 0, -1))
        md = {'BinaryResult': {'PixelSize': {'width': str(pixel_m), 'height': str(pixel_m)}, 'PixelUnitX': 'm',
                               'PixelUnitY': 'm', 'DetectorIndex': '0'},
              'Detectors': {'Detector-0': {'DetectorName': detector}}, 'Scan': {'FrameTime': '1.0'},
              'Acquisition': {'AcquisitionStartDatetime': {'DateTime': '1600000000'}}}
        col = np.frombuffer(json.dumps(md).encode(), dtype=np.uint8)
        grp.create_dataset('Metadata', data=np.repeat(col[:, None], frames.shape[0], axis=1))


def test_emd_berkeley(tmp_path):
    pytest.importorskip('rsciio')
    _berkeley(tmp_path / 'b.emd', ramp())
    m = load_micrograph(tmp_path / 'b.emd')
    np.testing.assert_array_equal(m.data, ramp())
    assert m.pixel_size == pytest.approx(0.5) and m.unit == 'nm' and m.metadata['format'] == 'emd'
    stack = np.stack([ramp(), 2 * ramp(), 3 * ramp()])
    _berkeley(tmp_path / 's.emd', stack)
    np.testing.assert_array_equal(load_image(tmp_path / 's.emd', page=1), 2 * ramp())
    with pytest.raises(InvalidImageError, match='holds 3 pages'):
        load_image(tmp_path / 's.emd')


def test_emd_velox(tmp_path):
    pytest.importorskip('rsciio')
    frames = np.stack([ramp(dtype=np.uint16), 2 * ramp(dtype=np.uint16)])
    _velox(tmp_path / 'v.emd', frames[:1])
    m = load_micrograph(tmp_path / 'v.emd')
    np.testing.assert_array_equal(m.data, frames[0])
    assert m.metadata['title'] == 'HAADF'
    assert (m.pixel_size, m.unit) in ((pytest.approx(200.), 'pm'), (pytest.approx(0.2), 'nm'))
    _velox(tmp_path / 'v2.emd', frames)
    np.testing.assert_array_equal(load_image(tmp_path / 'v2.emd', page=1), frames[1])
    with pytest.raises(InvalidImageError, match='holds 2 pages'):
        load_image(tmp_path / 'v2.emd')
    np.testing.assert_array_equal(load_image(tmp_path / 'v.emd', signal='HAADF'), frames[0])
    with pytest.raises(InvalidImageError, match="no image titled 'BF'"):
        load_image(tmp_path / 'v.emd', signal='BF')


def test_emd_h5_that_is_not_emd(tmp_path):
    import h5py
    with h5py.File(tmp_path / 'x.emd', 'w') as f: f['data'] = ramp()
    with pytest.raises(CorruptFileError, match='x.emd'):
        load_micrograph(tmp_path / 'x.emd')


# ---------------------------------------------------------------- DM3 / DM4 / SER real files
# Minimal writers for the two binary formats nobody ships a writer for. They follow the layouts that RosettaSciIO's
# readers parse (DM3/DM4 tag tree; TIA series header + data elements); they are not checked against Gatan/FEI
# software, but they exercise the real rsciio readers end to end (calibration, stacks, orientation).
_DM_DTYPES = {np.dtype('float32'): (2, 6), np.dtype('int16'): (1, 2), np.dtype('uint16'): (10, 4),
              np.dtype('uint8'): (6, 10), np.dtype('int32'): (7, 3)}  # numpy -> (DM image DataType, tag element type)
_TAG_FMT = {3: '<i4', 6: '<f4', 7: '<f8', 4: '<u2', 2: '<i2', 10: '<u1'}

def write_dm(path, data, scale=1.0, units='', version=3, name='test'):
    "Minimal Gatan DM3/DM4 writer (ImageList/TagGroup0/ImageData with calibrations), little-endian data."
    L = '>i4' if version == 3 else '>i8'
    def n(v): return np.array(v, L).tobytes()
    def data_tag(label, info, payload):
        body = b'%%%%' + n(len(info)) + b''.join(n(i) for i in info) + payload
        head = b'\x15' + struct.pack('>h', len(label)) + label.encode()
        return head + (n(len(body)) if version == 4 else b'') + body
    def simple(label, etype, value): return data_tag(label, [etype], np.array(value, _TAG_FMT[etype]).tobytes())
    def array(label, etype, values):
        values = np.asarray(values, _TAG_FMT[etype])
        return data_tag(label, [20, etype, values.size], values.tobytes())
    def string(label, s): return array(label, 4, [ord(c) for c in s]) if s else array(label, 4, [])
    def group(label, tags, root=False):
        content = b''.join(tags)
        head = b'' if root else b'\x14' + struct.pack('>h', len(label)) + label.encode()
        size = n(len(content) + 2 + (8 if version == 4 else 4)) if (version == 4 and not root) else b''
        return head + b'\x00\x01' + size + n(len(tags)) + content
    data = np.asarray(data)
    dm_type, etype = _DM_DTYPES[data.dtype]
    dims = list(data.shape[::-1])  # DM stores X, Y, Z
    cal_dims = [group('', [simple('Origin', 6, 0.), simple('Scale', 6, scale if i < 2 else 1.), string('Units', units if i < 2 else '')])
                for i in range(len(dims))]
    image = group('', [
        group('ImageData', [
            group('Calibrations', [group('Brightness', [simple('Origin', 6, 0.), simple('Scale', 6, 1.), string('Units', '')]),
                                   group('Dimension', cal_dims)]),
            array('Data', etype, data.ravel()),
            simple('DataType', 3, dm_type),
            group('Dimensions', [simple('', 3, d) for d in dims])]),
        group('ImageTags', []),
        string('Name', name)])
    root = group('', [group('ImageList', [image])], root=True)
    header = struct.pack('>i', version) + n(len(root) + 16) + struct.pack('>i', 1)
    with open(path, 'wb') as f: f.write(header + root + b'\x00' * 8)
    return path


_SER_DTYPES = {np.dtype('uint8'): 1, np.dtype('uint16'): 2, np.dtype('int16'): 5, np.dtype('int32'): 6,
               np.dtype('float32'): 7, np.dtype('float64'): 8}

def write_ser(path, frames, pixel_m=1e-10):
    "Minimal FEI TIA .ser writer (series version 0x210) for 2-D images (N, H, W); TIA stores rows bottom-up."
    frames = np.asarray(frames)
    if frames.ndim == 2: frames = frames[None]
    n, h, w = frames.shape
    units = b''  # series axis: index, no unit
    dim = struct.pack('<IddII', n, 0., 1., 0, 0) + struct.pack('<I', len(units)) + units
    header_len = 30 + len(dim)
    offsets_at = header_len
    first = offsets_at + 8 * n
    elem_len = 2 * (8 + 8 + 4) + 2 + 4 + 4 + h * w * frames.itemsize + 8  # + time tag (u2, u2, u4)
    data_offsets = [first + i * elem_len for i in range(n)]
    head = struct.pack('<HHHIIIIII', 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n, offsets_at, 1)
    out = head + dim + struct.pack(f'<{n}I', *data_offsets) + struct.pack(f'<{n}I', *[o + elem_len - 8 for o in data_offsets])
    for f in frames:
        out += struct.pack('<ddIddIHII', 0., pixel_m, 0, 0., pixel_m, 0, _SER_DTYPES[frames.dtype], w, h)
        out += np.ascontiguousarray(f[::-1]).astype(frames.dtype.newbyteorder('<')).tobytes()
        out += struct.pack('<HHI', 0x4152, 0, 0)
    with open(path, 'wb') as fh: fh.write(out)
    return path


@pytest.mark.parametrize('version', [3, 4])
def test_dm_real_files(tmp_path, version):
    pytest.importorskip('rsciio')
    img = ramp(dtype=np.float32)
    write_dm(tmp_path / f'a.dm{version}', img, scale=0.25, units='nm', version=version, name='HAADF')
    m = load_micrograph(tmp_path / f'a.dm{version}')
    np.testing.assert_array_equal(m.data, img)
    assert (m.pixel_size, m.unit) == (0.25, 'nm') and m.metadata['title'] == 'HAADF'
    stack = np.stack([ramp(), 2 * ramp(), 3 * ramp()]).astype(np.uint16)
    write_dm(tmp_path / f's.dm{version}', stack, scale=0.5, units='Å', version=version)
    m = load_micrograph(tmp_path / f's.dm{version}', page=2)
    np.testing.assert_array_equal(m.data, stack[2]); assert (m.pixel_size, m.unit) == (0.5, 'Å')
    with pytest.raises(InvalidImageError, match='holds 3 pages'):
        load_micrograph(tmp_path / f's.dm{version}')
    truncate(tmp_path / f'a.dm{version}', 0.6)
    with pytest.raises(CorruptFileError, match=f'a.dm{version}'):
        load_micrograph(tmp_path / f'a.dm{version}')


def test_ser_real_files(tmp_path):
    pytest.importorskip('rsciio')
    img = ramp(dtype=np.float32)
    write_ser(tmp_path / 'a.ser', img, pixel_m=2e-10)
    m = load_micrograph(tmp_path / 'a.ser')
    np.testing.assert_array_equal(m.data, img)  # TIA stores rows bottom-up; orientation must survive
    assert m.pixel_size == pytest.approx(0.2) and m.unit == 'nm'
    series = np.stack([ramp(), 2 * ramp()]).astype(np.uint16)
    write_ser(tmp_path / 's.ser', series)
    np.testing.assert_array_equal(load_image(tmp_path / 's.ser', page=1), series[1])
    with pytest.raises(InvalidImageError, match='holds 2 pages'):
        load_image(tmp_path / 's.ser')
    truncate(tmp_path / 'a.ser', 0.5)
    with pytest.raises(CorruptFileError, match='a.ser'):
        load_micrograph(tmp_path / 'a.ser')


# ---------------------------------------------------------------- DM3 / DM4 / SER (dispatch via a fake rsciio reader)
def _fake_reader(monkeypatch, module, sigs):
    fake = types.ModuleType(module)
    fake.file_reader = lambda filename, **kw: sigs
    monkeypatch.setitem(sys.modules, module, fake)


def _sig(data, scale=0.1, units='nm', nav=0, title='HAADF'):
    axes = [dict(index_in_array=i, name=f'ax{i}', scale=1. if i < nav else scale, units='s' if i < nav else units,
                 size=s, offset=0., navigate=i < nav) for i, s in enumerate(np.shape(data))]
    return dict(data=data, axes=axes, metadata={'General': {'title': title}}, original_metadata={})


@pytest.mark.parametrize('ext,module', [('.dm3', 'rsciio.digitalmicrograph'), ('.dm4', 'rsciio.digitalmicrograph'),
                                        ('.ser', 'rsciio.tia'), ('.emd', 'rsciio.emd')])
def test_rsciio_dispatch(tmp_path, monkeypatch, ext, module):
    f = tmp_path / f'a{ext}'; f.write_bytes(b'x')
    spectrum = _sig(np.ones(100), units='eV')
    _fake_reader(monkeypatch, module, [spectrum, _sig(ramp(), 0.25, 'nm'), _sig(-ramp(), 0.5, 'µm', title='BF')])
    m = load_micrograph(f)
    np.testing.assert_array_equal(m.data, ramp())
    assert (m.pixel_size, m.unit) == (0.25, 'nm') and m.metadata['image_titles'] == ['HAADF', 'BF']
    m = load_micrograph(f, signal='BF')
    np.testing.assert_array_equal(m.data, -ramp()); assert (m.pixel_size, m.unit) == (0.5, 'µm')
    np.testing.assert_array_equal(load_image(f, signal=1), -ramp())
    with pytest.raises(InvalidImageError, match='out of range'):
        load_image(f, signal=2)


def test_rsciio_stack_and_non_image(tmp_path, monkeypatch):
    f = tmp_path / 'a.dm4'; f.write_bytes(b'x')
    stack = np.stack([ramp(), 2 * ramp()])
    _fake_reader(monkeypatch, 'rsciio.digitalmicrograph', [_sig(stack, nav=1)])
    np.testing.assert_array_equal(load_image(f, page=1), 2 * ramp())
    with pytest.raises(InvalidImageError, match='holds 2 pages'):
        load_image(f)
    spectrum_image = _sig(np.ones((4, 5, 100)), nav=2)
    _fake_reader(monkeypatch, 'rsciio.digitalmicrograph', [spectrum_image])
    with pytest.raises(InvalidImageError, match='no 2-D image signal'):
        load_image(f)
    _fake_reader(monkeypatch, 'rsciio.digitalmicrograph', [_sig(ramp(), 1., '<undefined>')])
    assert load_micrograph(f).pixel_size is None


def test_rsciio_reader_failure_is_corrupt(tmp_path):
    pytest.importorskip('rsciio')
    for ext in ('.dm3', '.dm4', '.ser', '.emd'):
        f = tmp_path / f'junk{ext}'
        f.write_bytes(b'\x00\x01garbage' * 50)
        with pytest.raises(CorruptFileError, match=f'junk{ext}'):
            load_micrograph(f)


@pytest.mark.parametrize('ext,module,pip', [('.dm3', 'rsciio.digitalmicrograph', 'pip install rosettasciio'),
                                            ('.ser', 'rsciio.tia', 'pip install rosettasciio'),
                                            ('.emd', 'rsciio.emd', 'pip install rosettasciio'),
                                            ('.mrc', 'mrcfile', 'pip install mrcfile')])
def test_missing_dependency(tmp_path, monkeypatch, ext, module, pip):
    f = tmp_path / f'a{ext}'; f.write_bytes(b'x')
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=pip):
        load_micrograph(f)


# ---------------------------------------------------------------- bad files
def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.tif'):
        load_micrograph(tmp_path / 'nope.tif')
    with pytest.raises(IsADirectoryError, match='get_micrograph_files'):
        load_micrograph(tmp_path)


def test_unknown_extension(tmp_path):
    (tmp_path / 'a.xyz').write_bytes(b'abc')
    with pytest.raises(UnsupportedFormatError, match=r"'\.xyz'.*supported: .*\.tif.*\.dm4.*\.mrc"):
        load_micrograph(tmp_path / 'a.xyz')


def _write_tif(p): tifffile.imwrite(p, ramp(128, 128))
def _write_png(p): Image.fromarray(ramp(128, 128, np.uint16)).save(p)
def _write_jpg(p): Image.fromarray((ramp(128, 128) % 256).astype(np.uint8)).save(p)
def _write_npy(p): np.save(p, ramp(128, 128))
def _write_mrc(p):
    import mrcfile
    with mrcfile.new(p) as m: m.set_data(ramp(128, 128))
def _write_emd(p): _berkeley(p, ramp(128, 128))


@pytest.mark.parametrize('name,writer', [('t.tif', _write_tif), ('p.png', _write_png), ('j.jpg', _write_jpg),
                                         ('n.npy', _write_npy), ('m.mrc', _write_mrc), ('e.emd', _write_emd)])
@pytest.mark.parametrize('frac', [0.5, 0.0])
def test_truncated_files(tmp_path, name, writer, frac):
    p = tmp_path / name
    writer(p)
    load_micrograph(p)  # the intact file loads
    truncate(p, frac)
    with pytest.raises(CorruptFileError, match=name):
        load_micrograph(p)


def test_garbage_with_image_extension(tmp_path):
    for name in ('g.tif', 'g.png', 'g.jpg', 'g.npy', 'g.mrc'):
        (tmp_path / name).write_bytes(b'this is not an image at all' * 10)
        with pytest.raises(CorruptFileError, match=name):
            load_micrograph(tmp_path / name)


def test_all_nan_tiff_and_empty_page(tmp_path):
    tifffile.imwrite(tmp_path / 'nan.tif', np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InvalidImageError, match='no finite values'):
        load_micrograph(tmp_path / 'nan.tif')


# ---------------------------------------------------------------- check_image / normalize
@pytest.mark.parametrize('arr,msg', [(np.zeros(4), '2-D'), (np.zeros((3, 4, 5)), '3-D'),
                                     (np.zeros((1, 4, 5)), 'squeeze'), (np.zeros((0, 3)), 'empty'),
                                     (np.full((3, 3), np.inf), 'no finite'), (np.zeros((3, 3), complex), 'complex'),
                                     (np.array(5.), '0-D')])
def test_check_image_rejects(arr, msg):
    with pytest.raises(InvalidImageError, match=msg):
        check_image(arr)
    with pytest.raises(InvalidImageError, match=msg):
        normalize(arr)


def test_check_image_names_the_input():
    with pytest.raises(InvalidImageError, match='my_img'):
        check_image(np.zeros(3), name='my_img')


def test_normalize_paper_rules():
    img = np.array([[2., np.nan], [np.inf, 10.]])
    out = normalize(img)
    # non-finite -> 0 first, so the min becomes 0: (I - 0) / (10 - 0)
    np.testing.assert_allclose(out, [[0.2, 0.], [0., 1.]], rtol=1e-6)
    assert out.dtype == np.float32 and np.isnan(img[0, 1])  # input not modified
    x = ramp(dtype=np.int32) - 400
    out = normalize(x)
    assert out.min() == 0 and out.max() == 1
    np.testing.assert_allclose(out, (x - x.min()) / (x.max() - x.min()), rtol=1e-6)


def test_normalize_uniform_and_extremes():
    assert UNIFORM_VALUE == 0.5
    np.testing.assert_array_equal(normalize(np.full((5, 6), -3.)), np.full((5, 6), 0.5, np.float32))
    np.testing.assert_array_equal(normalize(np.array([[np.nan, 0.]])), [[0.5, 0.5]])  # NaN -> 0 == other value
    big = np.array([[-3e38, 3e38]], np.float32)
    np.testing.assert_array_equal(normalize(big), [[0., 1.]])


# ---------------------------------------------------------------- tiling
def test_dihedral_eight_distinct_and_group():
    img = ramp(5, 5)  # square, asymmetric, so all compositions stay comparable
    outs = [dihedral(img, k) for k in range(DIHEDRAL_COUNT)]
    assert DIHEDRAL_COUNT == 8 and len({o.tobytes() for o in outs}) == 8
    np.testing.assert_array_equal(outs[0], img)
    np.testing.assert_array_equal(outs[1], np.rot90(img))
    np.testing.assert_array_equal(outs[4], img[:, ::-1])
    key = {o.tobytes(): k for k, o in enumerate(outs)}
    for a in range(8):
        # inverse
        np.testing.assert_array_equal(dihedral(dihedral(img, a), dihedral_inverse(a)), img)
        np.testing.assert_array_equal(dihedral(dihedral(img, dihedral_inverse(a)), a), img)
        # closure: every composition is one of the 8, and each row of the Cayley table is a permutation
        row = [key.get(dihedral(dihedral(img, b), a).tobytes()) for b in range(8)]
        assert None not in row and sorted(row) == list(range(8))


def test_dihedral_non_square_and_batch_numpy():
    img = ramp(4, 7)
    assert dihedral(img, 1).shape == (7, 4) and dihedral(img, 6).shape == (4, 7)
    batch = np.stack([img, -img])[:, None]  # (2, 1, 4, 7)
    for k in range(8):
        out = dihedral(batch, k)
        np.testing.assert_array_equal(out[1, 0], dihedral(-img, k))
        assert out.flags.c_contiguous


def test_dihedral_torch_matches_numpy():
    torch = pytest.importorskip('torch')
    img = ramp(6, 9)
    t = torch.from_numpy(np.stack([img, 2 * img]))[:, None]  # [B, C, H, W]
    for k in range(8):
        out = dihedral(t, k)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_array_equal(out[1, 0].numpy(), dihedral(2 * img, k))
        np.testing.assert_array_equal(dihedral(out, dihedral_inverse(k)).numpy(), t.numpy())


def test_dihedral_bad_k():
    for k in (-1, 8, 1.0):
        with pytest.raises(ValueError, match='0..7'):
            dihedral(ramp(), k)
    with pytest.raises(InvalidImageError):
        dihedral(np.zeros(4), 0)


# ---------------------------------------------------------------- save_tiff
def test_save_tiff_roundtrip_and_overwrite(tmp_path):
    p = tmp_path / 'sub' / 'out.tif'
    assert save_tiff(p, ramp(dtype=np.uint16)) == p
    with tifffile.TiffFile(p) as t:
        assert t.pages[0].dtype == np.float32
    np.testing.assert_array_equal(load_image(p), ramp())
    with pytest.raises(FileExistsError, match=r'overwrite=True.*--overwrite'):
        save_tiff(p, np.zeros((3, 3)))
    np.testing.assert_array_equal(load_image(p), ramp())  # untouched
    save_tiff(p, np.zeros((3, 3)), overwrite=True)
    np.testing.assert_array_equal(load_image(p), np.zeros((3, 3)))
    assert sorted(x.name for x in p.parent.iterdir()) == ['out.tif']  # no temp files left behind


def test_save_tiff_calibration_and_stack(tmp_path):
    for unit in ('nm', 'Å', 'µm'):
        p = save_tiff(tmp_path / f'c_{len(unit)}{ord(unit[0])}.tif', ramp(), pixel_size=0.125, unit=unit)
        m = load_micrograph(p)
        assert m.pixel_size == pytest.approx(0.125) and m.unit == unit
    p = save_tiff(tmp_path / 'stack.tiff', np.stack([ramp(), 2 * ramp()]))
    np.testing.assert_array_equal(load_image(p, page=1), 2 * ramp())


def test_save_tiff_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r'\.tif'):
        save_tiff(tmp_path / 'a.png', ramp())
    with pytest.raises(InvalidImageError, match='2-D'):
        save_tiff(tmp_path / 'a.tif', np.zeros(5))
    with pytest.raises(ValueError, match='positive'):
        save_tiff(tmp_path / 'a.tif', ramp(), pixel_size=0)
    assert not (tmp_path / 'a.tif').exists()


# ---------------------------------------------------------------- folders and crop streams
@pytest.fixture
def tree(tmp_path):
    "CEM500K-like tree: uint8 TIFF patches of mixed sizes in nested folders, plus noise files."
    rng = np.random.default_rng(0)
    shapes = {'a/p1.tif': (40, 40), 'a/p2.TIF': (90, 70), 'b/c/p3.tiff': (20, 30), 'b/p4.tif': (64, 64),
              'b/p5.png': (50, 45)}
    for rel, shape in shapes.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        (tifffile.imwrite(tmp_path / rel, img) if '.t' in rel.lower() else Image.fromarray(img).save(tmp_path / rel))
    (tmp_path / 'a' / 'notes.txt').write_text('x')
    (tmp_path / '.hidden').mkdir(); tifffile.imwrite(tmp_path / '.hidden' / 'h.tif', np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / 'a' / '._p1.tif', np.zeros((8, 8), np.uint8))
    return tmp_path


def test_get_micrograph_files(tree):
    files = get_micrograph_files(tree)
    rel = [f.relative_to(tree).as_posix() for f in files]
    assert rel == ['a/p1.tif', 'a/p2.TIF', 'b/c/p3.tiff', 'b/p4.tif', 'b/p5.png']
    assert get_micrograph_files(tree / 'a', recurse=False) == [tree / 'a/p1.tif', tree / 'a/p2.TIF']
    assert get_micrograph_files(tree / 'b' / 'p4.tif') == [tree / 'b' / 'p4.tif']
    assert get_micrograph_files(tree, extensions=('.png',)) == [tree / 'b' / 'p5.png']
    with pytest.raises(FileNotFoundError, match='missing'):
        get_micrograph_files(tree / 'missing')
    with pytest.raises(UnsupportedFormatError):
        get_micrograph_files(tree / 'a' / 'notes.txt')
    assert set(MICROGRAPH_EXTENSIONS) >= {'.tif', '.tiff', '.png', '.jpg', '.jpeg', '.npy', '.dm3', '.dm4',
                                          '.emd', '.ser', '.mrc'}


def test_count_pages_and_shape_match_the_reader(tree, tmp_path):
    for f in get_micrograph_files(tree):
        assert count_pages(f) == 1 and image_shape(f) == load_image(f).shape
    stack = np.stack([ramp(), ramp()[::-1], ramp() * 2])
    tifffile.imwrite(tmp_path / 's.tif', stack, photometric='minisblack')
    np.save(tmp_path / 's.npy', stack)
    tifffile.imwrite(tmp_path / 'samples.tif', np.moveaxis(stack, 0, -1), photometric='minisblack', planarconfig='contig')
    for name in ('s.tif', 's.npy', 'samples.tif'):
        f = tmp_path / name
        assert count_pages(f) == 3, name
        assert image_shape(f, 2) == (24, 32) == load_image(f, page=2).shape
        with pytest.raises(InvalidImageError, match='out of range'):
            image_shape(f, 3)
    with pytest.raises(FileNotFoundError, match='nothere'):
        count_pages(tmp_path / 'nothere.tif')
    (tmp_path / 'bad.png').write_bytes(b'no png')
    with pytest.raises(CorruptFileError, match='bad.png'):
        count_pages(tmp_path / 'bad.png')


def test_count_pages_reads_headers_only(tree, monkeypatch):
    monkeypatch.setattr(io, 'load_micrograph', lambda *a, **k: pytest.fail('decoded pixels'))
    assert [count_pages(f) for f in get_micrograph_files(tree)] == [1] * 5


def test_pad_to_is_centred_reflection():
    img = ramp(20, 30)
    out = pad_to(img, 32)
    assert out.shape == (32, 32)
    np.testing.assert_array_equal(out[6:26, 1:31], img)                      # centred
    np.testing.assert_array_equal(out[6:26, 0], img[:, 1])                    # reflect, no edge repeat
    np.testing.assert_array_equal(out[:6, 1:31], img[6:0:-1])
    assert pad_to(img, 16) is img
    assert pad_to(np.ones((1, 1)), 5).shape == (5, 5)
    assert pad_to(ramp(3, 3), 20).shape == (20, 20)                            # wider than the image
    with pytest.raises(ValueError, match='positive int'):
        pad_to(img, 0)


def test_minmax():
    np.testing.assert_array_equal(minmax(np.array([1., 3.]), -1, 1), [-1., 1.])
    np.testing.assert_array_equal(minmax(np.full((2, 2), 4.)), np.full((2, 2), 0.5))
    np.testing.assert_array_equal(minmax(np.full((2, 2), 4.), -1, 1), np.zeros((2, 2)))
    assert minmax(np.zeros(3, np.float32)).dtype == np.float64
