"""Run the reliability suite and turn its record of cases into the docs page.

`tests/test_reliability.py` counts every case it tries, by kind, and writes that record when
VLM_RLAIF_RELIABILITY_RECORD names a file. This script runs the suite with it set (and pytest's junit report
for each test's outcome and time), writes tests/reliability/results.json (the record, the outcomes, the
machine) and tests/reliability/results.md (the page), then executes nbs/reliability.ipynb, which shows the
page on the docs site.

Usage: python tools/reliability.py             run the suite (2 to 3 minutes on 2 CPU cores), write both, execute the notebook
       python tools/reliability.py --render    rewrite results.md and the notebook from the committed results.json
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'tests'/'reliability'
SUITE = 'tests/test_reliability.py'
KINDS = ('kill and resume', 'corrupt inputs', 'malformed data files', 'judge-output fuzzing', 'numerical faults', 'config validation',
         'safety: atomic writes', 'safety: no unpickling', 'safety: paths', 'safety: API keys')

def machine() -> dict:
    import torch
    return dict(platform=platform.platform(), machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version(),
                torch=torch.__version__, load_average=round(os.getloadavg()[0], 2))

def outcomes(junit:Path) -> list[dict]:
    "Each test's outcome (passed, failed, xfailed, skipped), seconds and, for an expected failure, its reason."
    out = []
    for case in ET.parse(junit).getroot().iter('testcase'):
        outcome, reason = 'passed', ''
        for child in case:
            if child.tag in ('failure', 'error'): outcome, reason = 'failed', (child.get('message') or '')[:300]
            elif child.tag == 'skipped':
                xfail = child.get('type') == 'pytest.xfail'
                outcome, reason = ('xfailed' if xfail else 'skipped'), (child.get('message') or '').removeprefix('xfail-marked test passes unexpectedly')
        out.append(dict(test=case.get('name'), outcome=outcome, seconds=round(float(case.get('time', 0)), 1), reason=reason))
    return out

def run_suite() -> dict:
    "Run the suite; its record of cases, each test's outcome, the machine and the time."
    tmp = Path(tempfile.mkdtemp())
    env = dict(os.environ, VLM_RLAIF_RELIABILITY_RECORD=str(tmp/'record.json'), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', SUITE, f'--junitxml={tmp/"junit.xml"}']
    start, t0 = machine(), time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env)
    seconds = round(time.time() - t0, 1)
    if not (tmp/'record.json').exists(): raise SystemExit(f'the suite wrote no record (exit {p.returncode})')
    cases = json.loads((tmp/'record.json').read_text())['cases']
    return dict(date=datetime.datetime.now().isoformat(timespec='seconds'), machine=start, command=f'python -m pytest {SUITE}',
                seconds=seconds, exit_code=p.returncode, tests=outcomes(tmp/'junit.xml'), cases=cases)

def render(results:dict) -> str:
    "The page: the totals by kind, every case, the known gaps, and how the numbers were made."
    by_kind = defaultdict(list)
    for c in results['cases']: by_kind[c['kind']].append(c)
    kinds = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    tests = results['tests']
    passed = sum(t['outcome'] == 'passed' for t in tests)
    m = results['machine']
    lines = ['## Summary', '',
             f"{sum(c['tried'] for c in results['cases'])} cases tried, {sum(c['survived'] for c in results['cases'])} survived, "
             f"in {len(tests)} tests ({passed} passed, {sum(t['outcome'] == 'xfailed' for t in tests)} known gaps, "
             f"{sum(t['outcome'] == 'failed' for t in tests)} failed) in {results['seconds']:.0f} s.", '',
             '| kind | cases tried | survived |', '|---|---:|---:|']
    for k in kinds: lines.append(f"| {k} | {sum(c['tried'] for c in by_kind[k])} | {sum(c['survived'] for c in by_kind[k])} |")
    for k in kinds:
        lines += ['', f'## {k[:1].upper() + k[1:]}', '', '| case | tried | survived |', '|---|---:|---:|']
        lines += [f"| {c['case'].replace('|', '/')} | {c['tried']} | {c['survived']} |" for c in by_kind[k]]
    gaps = [t for t in tests if t['outcome'] in ('xfailed', 'failed')]
    if gaps:
        lines += ['', '## Known gaps', '', 'Expected failures (strict: each test fails the suite once its gap is closed), and any failure:', '']
        lines += [f"- `{t['test']}` ({t['outcome']}): {t['reason']}" for t in gaps]
    lines += ['', '## How these numbers were made', '',
              f"`python tools/reliability.py` ran `{results['command']}` on {results['date']}: {m['platform']}, {m['cpus']} CPUs "
              f"(load average {m['load_average']} at the start), Python {m['python']}, torch {m['torch']}. Slowest tests: "
              + ', '.join(f"`{t['test']}` {t['seconds']:.0f} s" for t in sorted(tests, key=lambda t: -t['seconds'])[:4]) + '.']
    return '\n'.join(lines) + '\n'

def execute_notebook():
    "Run nbs/reliability.ipynb so that its committed outputs show the page, then clean its metadata."
    import nbformat
    from nbclient import NotebookClient
    path = ROOT/'nbs'/'reliability.ipynb'
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    nbformat.write(nb, path)
    subprocess.run(['nbdev_clean', '--fname', str(path)], cwd=ROOT, check=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--render', action='store_true', help='only re-render the page from the committed results.json')
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.render: results = json.loads((OUT/'results.json').read_text())
    else:
        results = run_suite()
        (OUT/'results.json').write_text(json.dumps(results, indent=1) + '\n')
    (OUT/'results.md').write_text(render(results))
    execute_notebook()
    print(f"{OUT/'results.md'}: {len(results['cases'])} kinds of case, suite exit code {results['exit_code']}")
