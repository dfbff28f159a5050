"""`pip install` of the exported library: a wheel built from the repo installs in a fresh venv, `import
vlm_rlaif` (every module) and `vlm-rlaif --help` work there, and nothing Jupyter-only is imported."""
import os, subprocess, sys, sysconfig, textwrap, venv, zipfile
from pathlib import Path
import pytest
from conftest import ROOT

JUPYTER_ONLY = ['ipywidgets', 'IPython', 'ipykernel', 'jupyter_client', 'nbdev', 'fastcore', 'papermill', 'execnb']

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(out), str(ROOT)], check=True)
    return next(out.glob('vlm_rlaif-*.whl'))

def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = sorted(p.name for p in (ROOT/'vlm_rlaif').glob('*.py'))
    for m in modules: assert f'vlm_rlaif/{m}' in names, m
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('METADATA'))).decode()
    for req in ('torch', 'transformers', 'peft', 'trl', 'datasets'): assert f'Requires-Dist: {req}' in meta
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
    assert 'vlm-rlaif = vlm_rlaif.cli:main' in entry

def test_installs_in_fresh_venv_without_jupyter(wheel, tmp_path):
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=False)
    py = env_dir/'bin'/'python'
    site = Path(subprocess.check_output([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], text=True).strip())
    # the wheel itself, unpacked as pip would (no network, no dependency resolution) ...
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)], check=True)
    # ... its runtime dependencies borrowed from this environment, with every Jupyter-only package made unimportable
    (site/'deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    (site/'sitecustomize.py').write_text(textwrap.dedent(f'''
        import sys, importlib.abc
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {JUPYTER_ONLY!r}: raise ImportError(f'{{name}} is Jupyter-only and blocked in this test')
        sys.meta_path.insert(0, _Block())
    '''))
    modules = sorted(p.stem for p in (ROOT/'vlm_rlaif').glob('*.py') if not p.stem.startswith('_'))
    code = ('import importlib, vlm_rlaif, sys\n'
            f'for m in {modules!r}: importlib.import_module("vlm_rlaif." + m)\n'
            'print(vlm_rlaif.__file__)\n'
            'from vlm_rlaif.cli import main; sys.exit(main(["--help"]))')
    env = {**os.environ, 'PYTHONNOUSERSITE': '1'}
    r = subprocess.run([str(py), '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(site) in r.stdout  # the installed copy, not the repo's
    assert 'usage: vlm-rlaif' in r.stdout

@pytest.mark.slow
def test_clean_venv_install_with_dependencies(wheel, tmp_path):
    "A really clean venv: torch==2.13.0 first, then the wheel and its dependencies from the package index."
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir/'bin'/'python'), '-m', 'pip', 'install', '-q']
    subprocess.run(pip + ['torch==2.13.0'], check=True)
    subprocess.run(pip + [str(wheel)], check=True)
    r = subprocess.run([str(env_dir/'bin'/'vlm-rlaif'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'usage: vlm-rlaif' in r.stdout, r.stderr
