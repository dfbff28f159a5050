"""The documentation site builds offline (no Quarto) from the notebooks, with one page per notebook, and
every exported public name appears on its module's page."""
import ast, html as htmllib, json, re, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, NBS

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py'), 'site', '--out', str(out)], check=True, cwd=ROOT)
    return out

def _text(page:Path) -> str:
    "The visible text of a page (tags stripped, entities decoded)."
    return htmllib.unescape(re.sub(r'<[^>]+>', '', page.read_text()))

def _default_exp(nb_path:Path) -> str|None:
    for c in json.loads(nb_path.read_text())['cells']:
        for line in ''.join(c['source']).splitlines():
            if line.replace(' ', '').startswith('#|default_exp'): return line.split('default_exp', 1)[1].strip()
    return None

def _public_names(module:str) -> list[str]:
    tree = ast.parse((ROOT/'vlm_rlaif'/f'{module}.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == '__all__' for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []

def test_one_page_per_notebook_with_navigation(site):
    pages = json.loads((site/'pages.json').read_text())
    notebooks = sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb') if not p.name.startswith(('_', '.')))
    assert sorted(p['notebook'] for p in pages) == notebooks
    assert pages[0]['page'] == 'index.html'
    for p in pages:
        html = (site/p['page']).read_text()
        assert 'class="sidebar"' in html and html.count('<a') >= len(pages), p['page']
        # every sidebar link resolves to a page of the site
        for other in pages: assert other['page'].split('/')[-1] in html

def test_every_exported_name_is_on_its_module_page(site):
    pages = {p['notebook']: p['page'] for p in json.loads((site/'pages.json').read_text())}
    missing = {}
    for nb, page in pages.items():
        module = _default_exp(NBS/nb)
        if not module: continue
        text = _text(site/page)
        absent = [n for n in _public_names(module) if n not in text]
        if absent: missing[module] = absent
    assert not missing, f'exported names missing from their docs page: {missing}'

def test_hidden_cells_are_hidden(site):
    text = _text(site/'core.html')
    assert 'from fastcore.test import' not in text  # a `#| hide` cell of 00_core
    assert 'def seed_everything(' in text  # show_doc renders the signature
    assert '#| export' not in text and '#| hide' not in text
