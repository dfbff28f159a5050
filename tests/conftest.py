import os
from pathlib import Path

# Tests never touch the network: a hub lookup without one hangs before it fails.
for var in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'): os.environ.setdefault(var, '1')

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running; run with VLM_RLAIF_SLOW=1')

def pytest_collection_modifyitems(config, items):
    import pytest
    if os.environ.get('VLM_RLAIF_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: set VLM_RLAIF_SLOW=1 to run')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
