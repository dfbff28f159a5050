"""Every notebook runs end to end under papermill, with its `parameters` cell overridden by the small
values in notebook_params.yaml. Cells flagged with a tst_flag (`#| slow`, `#| cuda`) are skipped, as
nbdev_test skips them, unless the flag is listed in VLM_RLAIF_TEST_FLAGS."""
import json, os, re
from pathlib import Path
import pytest, yaml
from conftest import ROOT, NBS

FLAGS = set(re.split(r'\s+', (ROOT/'settings.ini').read_text().split('tst_flags =')[1].splitlines()[0].strip()))
ENABLED = set(os.environ.get('VLM_RLAIF_TEST_FLAGS', '').split())
PARAMS = yaml.safe_load((Path(__file__).parent/'notebook_params.yaml').read_text()) or {}
NOTEBOOKS = sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def _flags(src:str) -> set[str]:
    "The tst_flags a cell carries in its leading `#| flag` lines."
    out = set()
    for line in src.splitlines():
        m = re.match(r'^\s*#\s*\|\s*(.+)$', line)
        if not m: break
        out |= set(m.group(1).split()) & FLAGS
    return out

def _without_flagged_cells(nb:dict) -> dict:
    nb['cells'] = [c for c in nb['cells'] if c['cell_type'] != 'code' or not (_flags(''.join(c['source'])) - ENABLED)]
    return nb

def test_every_notebook_has_a_parameters_cell():
    missing = [n for n in NOTEBOOKS
               if not any('parameters' in c.get('metadata', {}).get('tags', []) for c in json.loads((NBS/n).read_text())['cells'])]
    assert not missing, f'notebooks without a papermill parameters cell: {missing}'

def test_params_file_names_existing_notebooks():
    assert not set(PARAMS) - set(NOTEBOOKS), f'notebook_params.yaml names unknown notebooks: {set(PARAMS) - set(NOTEBOOKS)}'

def test_flag_detection():
    assert _flags('#| slow\nx=1') == {'slow'} and _flags('#| export\nx=1') == set() and _flags('x=1\n#| slow') == set()

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    import papermill as pm
    src = NBS/name
    nb = _without_flagged_cells(json.loads(src.read_text()))
    staged = tmp_path/src.name
    staged.write_text(json.dumps(nb))
    # run from the notebook's own folder, as a reader would, so that relative paths mean the same
    pm.execute_notebook(str(staged), str(tmp_path/('out-' + src.name)), parameters=PARAMS.get(name, {}),
                        kernel_name='python3', cwd=str(src.parent), progress_bar=False)

def _mixes_imports_and_code(src:str) -> bool:
    "nbdev's docs build executes every cell that imports something: such a cell must hold imports only."
    import ast
    lines = [l for l in src.splitlines() if not l.lstrip().startswith('#|')]
    try: tree = ast.parse('\n'.join(lines))
    except SyntaxError: return False  # magics and the like: nbdev does not execute them either
    kinds = {isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body}
    return kinds == {True, False}

def test_import_cells_hold_only_imports():
    bad = []
    for name in NOTEBOOKS:
        for i, c in enumerate(json.loads((NBS/name).read_text())['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or re.search(r'^\s*#\s*\|\s*export', src, re.M): continue
            if _mixes_imports_and_code(src): bad.append(f'{name} cell {i}: {src.splitlines()[0][:60]}')
    assert not bad, 'cells that mix imports with other code (split them; nbdev executes import cells when building docs):\n' + '\n'.join(bad)
