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

def test_run_and_report(tmp_path, capsys):
    args = ['run', '--set', f'root={tmp_path}', '--set', 'name=t', '--set', 'world.n_sft=2', '--set', 'world.n_rl=2',
            '--set', 'world.n_rm=2', '--set', 'world.n_bench=2', '--set', 'world.n_text=5', '--stage', 'world']
    assert main(args[:1] + ['/dev/null'] + args[1:]) == 0
    assert (tmp_path/'t'/'world'/'DONE.json').exists() and not (tmp_path/'t'/'frames').exists()
    assert main(['report', str(tmp_path/'t')]) == 0
    out = capsys.readouterr().out
    assert 'world' in out and 'frames     not done' in out

def test_config_errors_name_the_key(tmp_path, capsys):
    cfg = tmp_path/'c.yaml'; cfg.write_text('world:\n  n_sft: -1\n')
    assert main(['run', str(cfg)]) == 2
    assert 'world.n_sft: must be >= 0' in capsys.readouterr().err
    cfg.write_text('wrold: {}\n')
    assert main(['run', str(cfg)]) == 2
    assert "unknown key 'wrold'" in capsys.readouterr().err
