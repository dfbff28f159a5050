import subprocess, sys
from vlm_rlaif.cli import main

def test_console_script_help():
    r = subprocess.run(['vlm-rlaif', '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'usage: vlm-rlaif' in r.stdout, r.stderr

def test_unknown_command_is_an_error(capsys):
    import pytest
    with pytest.raises(SystemExit) as e: main(['no-such-command'])
    assert e.value.code == 2 and 'invalid choice' in capsys.readouterr().err

def test_env_report(capsys):
    assert main(['env']) == 0
    out = capsys.readouterr().out
    assert 'torch' in out and 'hf_offline' in out
