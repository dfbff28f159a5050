"""bench: the judge protocol against a real HTTP server on loopback (canned answers, timeouts, 429, 500, redirects,
garbage bodies, bounded request counts, the key never written or logged), strict parsing, inference (resume, bad
videos, LoRA adapters), aggregation and the whole stage."""
import http.server, json, logging, pickle, threading, time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlm_rlaif.bench import (BenchConfig, JudgeAPIError, JudgeParseError, OpenAIChatJudge, PAPER_RESULTS, bootstrap_ci, collect_predictions,
                             judge_messages, judge_requests, load_bench_model, make_judge, parse_judgment, predict, read_bench, results_table,
                             run_bench, summarize)
from vlm_rlaif.core import ConfigError, JsonlStore, RunDir, config_from_dict
from vlm_rlaif.judge import ChatJudge, HFChatJudge

KEY = 'sk-test-' + 'k3y' * 10

# ---------------------------------------------------------------- a scripted chat-completions server on loopback

def completion(text, model='judge-1'):
    return dict(status=200, body={'model': model, 'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text}}]})

class Script:
    "Responses served in order (then `default(body)`, or else the last one again); every request is recorded."
    def __init__(self, responses, default=None):
        self.responses, self.default, self.requests, self.lock = list(responses), default, [], threading.Lock()

    def next(self, body):
        with self.lock:
            self.requests.append(body)
            if self.responses and (self.default is not None or len(self.responses) > 1): return self.responses.pop(0)
            return self.responses[0] if self.responses else self.default(body)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers['Content-Length']))
        body = dict(path=self.path, auth=self.headers.get('Authorization'), json=json.loads(raw))
        r = self.server.script.next(body)
        if callable(r): r = r(body)
        time.sleep(r.get('delay', 0))
        payload = r['body'] if isinstance(r['body'], bytes) else json.dumps(r['body']).encode()
        if r.get('echo_auth'): payload += (body['auth'] or '').encode()
        try:
            self.send_response(r['status'])
            for k, v in r.get('headers', {}).items(): self.send_header(k, v)
            self.send_header('Content-Length', str(len(payload))); self.end_headers(); self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError): pass   # the client timed out and left
    def log_message(self, *args): pass

@pytest.fixture
def serve():
    servers = []
    def start(responses, default=None):
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        server.daemon_threads = True
        server.script = Script(responses, default)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f'http://127.0.0.1:{server.server_address[1]}/v1', server.script
    yield start
    for s in servers: s.shutdown(); s.server_close()

def make(base_url, **kw):
    sleeps = []
    kw = dict(dict(api_key=KEY, judge_id='judge-1', max_retries=2, backoff_s=0.01, timeout_s=5.0, sleep=sleeps.append), **kw)
    return OpenAIChatJudge('judge', base_url, **kw), sleeps

QA_ITEM = dict(id='QA:1', kind='qa', benchmark='QA', questions=['What colour is the square?'], answer='blue')
def qa_conv(pred='blue'): return judge_messages('qa', QA_ITEM, [pred])

# ---------------------------------------------------------------- the HTTP client

def test_canned_answer_and_the_reported_model(serve):
    url, script = serve([completion("{'pred': 'yes', 'score': 5}", model='judge-2024-01-01')])
    judge, _ = make(url, judge_id=None)
    assert judge.judge_id == 'judge-2024-01-01' and judge.requests == 1          # one probe names the model
    assert judge.chat([qa_conv()], 20, 0.0) == ["{'pred': 'yes', 'score': 5}"]
    req = script.requests[-1]
    assert req['path'] == '/v1/chat/completions' and req['auth'] == f'Bearer {KEY}'
    assert req['json']['model'] == 'judge' and req['json']['max_tokens'] == 20 and req['json']['temperature'] == 0.0
    assert [m['role'] for m in req['json']['messages']] == ['system', 'user'] and isinstance(req['json']['messages'][1]['content'], str)
    assert isinstance(judge, ChatJudge)

def test_config_and_environment(monkeypatch):
    monkeypatch.setenv('VLM_RLAIF_JUDGE_MODEL', 'env-model'); monkeypatch.setenv('OPENAI_BASE_URL', 'http://127.0.0.1:9/v1/')
    monkeypatch.setenv('MY_KEY', KEY)
    j = make_judge('openai', config_from_dict(BenchConfig, {'judge_api_key_env': 'MY_KEY'}))
    assert (j.model, j.base_url) == ('env-model', 'http://127.0.0.1:9/v1') and j._key.reveal() == KEY
    j = make_judge('openai', config_from_dict(BenchConfig, {'judge_model': 'cfg-model', 'judge_base_url': 'http://x/v1', 'judge_api_key_env': 'MY_KEY'}))
    assert (j.model, j.base_url) == ('cfg-model', 'http://x/v1')
    with pytest.raises(ValueError, match='must start with http'): OpenAIChatJudge('m', 'ftp://x')

def test_429_is_retried_after_retry_after(serve):
    url, script = serve([dict(status=429, body={'error': 'slow down'}, headers={'Retry-After': '3'}), completion("{'score': 4}")])
    judge, sleeps = make(url, max_backoff_s=10)
    assert judge.chat([qa_conv()], 8) == ["{'score': 4}"]
    assert len(script.requests) == 2 and sleeps == [3.0]

def test_500_gives_up_after_bounded_retries(serve, tmp_path):
    url, script = serve([dict(status=500, body=b'internal error')])
    judge, sleeps = make(url, max_retries=3)
    with pytest.raises(JudgeAPIError, match=r'HTTP 500.*gave up after 4 attempts'): judge.chat([qa_conv()], 8)
    assert len(script.requests) == 4 and sleeps == [0.01, 0.02, 0.04]
    # through judge_requests: an api_error record, not cached, and a re-run tries again, a bounded number of times
    cache = JsonlStore(tmp_path/'cache.jsonl')
    recs = judge_requests(judge, [dict(id='qa:1', criterion='qa', messages=qa_conv())], cache, progress=False)
    assert recs[0]['status'] == 'api_error' and recs[0]['judge_id'] == 'judge-1' and len(cache) == 0
    assert len(script.requests) == 8

def test_backoff_is_capped(serve):
    url, script = serve([dict(status=503, body=b'', headers={'Retry-After': '3600'})])
    judge, sleeps = make(url, max_retries=2, backoff_s=1.0, max_backoff_s=1.5)
    with pytest.raises(JudgeAPIError): judge.chat([qa_conv()], 8)
    assert sleeps == [1.5, 1.5] and len(script.requests) == 3

def test_timeout_is_retried_then_an_api_error(serve):
    url, script = serve([dict(delay=1.0, **completion("{'score': 1}"))])
    judge, sleeps = make(url, timeout_s=0.2, max_retries=1)
    t0 = time.time()
    with pytest.raises(JudgeAPIError, match='(?i)timed? ?out'): judge.chat([qa_conv()], 8)
    assert time.time() - t0 < 3 and len(script.requests) == 2 and len(sleeps) == 1

@pytest.mark.parametrize('body', [b'<html>bad gateway</html>', b'{"choices": []}', b'{"model": "judge-1"}', b'{"model": "judge-1", "choices": [{"message": {"content": null}}]}'])
def test_garbage_bodies_are_retried(serve, body):
    url, script = serve([dict(status=200, body=body), completion("{'score': 2}")])
    judge, sleeps = make(url)
    assert judge.chat([qa_conv()], 8) == ["{'score': 2}"] and len(script.requests) == 2
    url, script = serve([dict(status=200, body=body)])
    judge, _ = make(url, max_retries=1)
    with pytest.raises(JudgeAPIError, match='garbage body'): judge.chat([qa_conv()], 8)
    assert len(script.requests) == 2

def test_a_reply_that_is_not_http(tmp_path):
    import socket
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(8)
    def answer():
        for _ in range(2):
            conn, _ = srv.accept(); conn.recv(65536); conn.sendall(b'garbage, not HTTP\r\n\r\n'); conn.close()
    threading.Thread(target=answer, daemon=True).start()
    judge, _ = make(f'http://127.0.0.1:{srv.getsockname()[1]}/v1', max_retries=1)
    with pytest.raises(JudgeAPIError, match='gave up after 2 attempts'): judge.chat([qa_conv()], 8)
    srv.close()

def test_4xx_is_not_retried_and_the_key_is_redacted(serve, caplog):
    url, script = serve([dict(status=401, body=b'invalid key: ', echo_auth=True)])
    judge, sleeps = make(url)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeAPIError) as e: judge.chat([qa_conv()], 8)
    assert len(script.requests) == 1 and sleeps == []
    assert 'HTTP 401' in str(e.value) and '<redacted>' in str(e.value) and KEY not in str(e.value) and KEY not in repr(e.value.errors)

def test_redirects_are_not_followed(serve):
    target_url, target = serve([completion("{'score': 5}")])
    url, script = serve([dict(status=307, body=b'', headers={'Location': target_url + '/chat/completions'})])
    judge, _ = make(url)
    with pytest.raises(JudgeAPIError, match='HTTP 307'): judge.chat([qa_conv()], 8)
    assert len(script.requests) == 1 and target.requests == []      # the key never reached the other server

def test_a_changed_model_is_refused(serve):
    url, _ = serve([completion("{'score': 5}", model='judge-2')])
    judge, _ = make(url)   # pinned to judge-1
    with pytest.raises(JudgeAPIError, match="reported model 'judge-2', not 'judge-1'"): judge.chat([qa_conv()], 8)

def test_partial_failures_keep_the_other_answers(serve, tmp_path):
    def answer(body):
        content = body['json']['messages'][1]['content']
        if 'Predicted Answer: FAIL' in content: return dict(status=500, body=b'boom')
        return completion("{'pred': 'yes', 'score': 5}" if 'Predicted Answer: blue' in content else 'It is wrong.')
    url, script = serve([], default=answer)
    judge, _ = make(url, max_retries=1, concurrency=3)
    convs = [qa_conv('blue'), qa_conv('FAIL'), qa_conv('red')]
    with pytest.raises(JudgeAPIError) as e: judge.chat(convs, 8)
    assert e.value.results[0] == "{'pred': 'yes', 'score': 5}" and e.value.results[1] is None and e.value.errors[1] is not None
    cache = JsonlStore(tmp_path/'cache.jsonl')
    reqs = [dict(id=f'qa:{i}', criterion='qa', messages=c, item=f'QA:{i}') for i, c in enumerate(convs)]
    n0 = len(script.requests)
    recs = judge_requests(judge, reqs, cache, batch_size=3, progress=False)
    assert [r['status'] for r in recs] == ['ok', 'api_error', 'parse_error'] and recs[0]['item'] == 'QA:0'
    assert len(cache) == 2 and len(script.requests) - n0 == 4            # 1 + 2 attempts + 1
    recs = judge_requests(judge, reqs, cache, batch_size=3, progress=False)
    assert [r['status'] for r in recs] == ['ok', 'api_error', 'parse_error'] and len(script.requests) - n0 == 6   # only the failed one again

def test_cache_is_keyed_by_judge_and_prompt(serve, tmp_path):
    url, script = serve([completion("{'score': 3}")])
    judge, _ = make(url)
    cache = JsonlStore(tmp_path/'cache.jsonl')
    reqs = [dict(id='correctness:a', criterion='correctness', messages=[{'role': 'user', 'content': 'same prompt'}]),
            dict(id='correctness:b', criterion='correctness', messages=[{'role': 'user', 'content': 'same prompt'}])]
    assert [r['score'] for r in judge_requests(judge, reqs, cache, progress=False)] == [3.0, 3.0]
    assert len(script.requests) == 1 and len(cache) == 1                 # one request per distinct prompt
    other, _ = make(url, judge_id='judge-1')
    judge_requests(other, reqs, cache, progress=False)
    assert len(script.requests) == 1                                     # same judge id: from the cache
    url2, script2 = serve([completion("{'score': 1}", model='judge-9')])
    third, _ = make(url2, judge_id='judge-9')
    assert [r['score'] for r in judge_requests(third, reqs, cache, progress=False)] == [1.0, 1.0] and len(script2.requests) == 1

def test_videos_and_non_text_content_are_refused(serve):
    url, script = serve([completion("{'score': 3}")])
    judge, _ = make(url)
    with pytest.raises(ValueError, match='videos are not supported'): judge.chat([qa_conv()], 8, videos=[np.zeros((1, 2, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match='only text content'): judge.chat([[{'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': 'x'}]}]], 8)
    assert script.requests == []
    assert judge.chat([[{'role': 'user', 'content': [{'type': 'text', 'text': 'a'}, {'type': 'text', 'text': 'b'}]}]], 8) == ["{'score': 3}"]
    assert script.requests[0]['json']['messages'][0]['content'] == 'ab'

def test_the_key_is_not_in_reprs_or_pickles(monkeypatch):
    monkeypatch.setenv('SOME_KEY', KEY)
    judge = OpenAIChatJudge('m', 'http://127.0.0.1:9/v1', api_key_env='SOME_KEY')
    assert KEY not in repr(judge) and KEY not in str(vars(judge)) and KEY not in repr(judge._key)
    with pytest.raises(TypeError, match='never pickled'): pickle.dumps(judge)

# ---------------------------------------------------------------- strict parsing

@pytest.mark.parametrize('text,qa', [
    ("{'score': 3} because it is close", False), ("Sure! {'score': 3}", False), ("{'score': {'value': 3}}", False), ("['score', 3]", False),
    ("{'score': -1}", False), ("{'score': 5.01}", False), ("{'score': None}", False), ("{'pred': 'yes', 'score': 3}", False),
    ("{'pred': True, 'score': 3}", True), ("{'pred': 'yes'}", True), ("{'pred': 'yes', 'score': '5'}", True), ("```\n{'score': 3}", False),
    ("{'score': 3}\n{'score': 4}", False), ("{score: 3}", False), (None, False), ("{'pred': 'yes please', 'score': 3}", True)])
def test_malformed_judge_outputs(text, qa):
    with pytest.raises(JudgeParseError): parse_judgment(text, qa)

def test_wellformed_judge_outputs():
    assert parse_judgment('{"pred": "YES", "score": 4}', qa=True) == {'pred': 'yes', 'score': 4.0}
    assert parse_judgment("```json\n{\"score\": 0}\n```") == {'score': 0.0}
    assert parse_judgment("{'score': 2.5}") == {'score': 2.5}

def test_consistency_prompt_has_both_questions():
    item = dict(id='c', kind='consistency', questions=['Q one?', 'Q two?'], answer='A')
    user = judge_messages('consistency', item, ['p1', 'p2'])[1]['content']
    assert 'Question 1: Q one?' in user and 'Question 2: Q two?' in user and user.count('Q one?') == 1

# ---------------------------------------------------------------- aggregation and reports

def test_summarize_excludes_failures_and_counts_them():
    items = [dict(id=f'QA:{i}', kind='qa', benchmark='MSVD-QA') for i in range(4)]
    recs = [dict(id='qa:0', status='ok', item='QA:0', criterion='qa', pred='yes', score=5.0),
            dict(id='qa:1', status='ok', item='QA:1', criterion='qa', pred='no', score=1.0),
            dict(id='qa:2', status='api_error', item='QA:2', criterion='qa'),
            dict(id='qa:3', status='parse_error', item='QA:3', criterion='qa')]
    s = summarize(items, {'seed0': recs}, n_boot=100)
    assert s['metrics']['MSVD-QA accuracy']['mean'] == 50.0 and s['metrics']['MSVD-QA score']['mean'] == 3.0
    assert s['metrics']['MSVD-QA accuracy']['n_items'] == 2 and s['counts'] == {'ok': 2, 'api_error': 1, 'parse_error': 1}
    table = results_table(dict(rows=[dict(model='m', judge_id='j', **s)], ci=0.95))
    header, rule, ours, *paper = table.splitlines()
    cols = [c.strip() for c in header.strip('|').split('|')]
    assert len(cols) == len(set(cols)) and cols[:3] == ['model', 'judge', 'Correctness']
    i = cols.index('MSVD-QA acc.')
    assert [c.strip() for c in ours.strip('|').split('|')][i].startswith('50.00 [')
    rlaif = next(l for l in paper if l.startswith('| VLM-RLAIF (paper)'))
    assert [c.strip() for c in rlaif.strip('|').split('|')][i] == f"{PAPER_RESULTS['VLM-RLAIF']['MSVD-QA accuracy']:.2f}"

def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    few, many = bootstrap_ci(rng.normal(3, 1, 20), 2000), bootstrap_ci(rng.normal(3, 1, 2000), 2000)
    assert few['ci_items'][1] - few['ci_items'][0] > 3 * (many['ci_items'][1] - many['ci_items'][0])
    assert many['ci_items'][0] < 3 < many['ci_items'][1] and few['ci_seeds'] is None
    passes = bootstrap_ci(np.stack([np.full(50, 2.0), np.full(50, 4.0)]), 1000)
    assert passes['mean'] == 3.0 and passes['ci_items'] == [3.0, 3.0] and passes['ci_seeds'][0] >= 2.0 and passes['ci_seeds'][1] <= 4.0

# ---------------------------------------------------------------- inference and the stage, on a tiny world

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    import torch
    from vlm_rlaif.model import ModelConfig, build_video_lmm, save_video_lmm, train_tokenizer
    from vlm_rlaif.world import WorldConfig, build_world, world_text
    root = tmp_path_factory.mktemp('bench')
    wcfg = WorldConfig(n_sft=0, n_rl=0, n_rm=0, n_bench=2, n_text=10, workers=0)
    run = RunDir('r', root/'runs')
    build_world(wcfg, run.stage('world'), progress=False)
    tok = train_tokenizer(world_text(wcfg))
    torch.manual_seed(0)
    mcfg = ModelConfig(text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=2, text_ffn=64, vision_hidden=32, vision_layers=1,
                       vision_heads=2, vision_ffn=64, frames=2)
    ckpt = save_video_lmm(root/'ckpt', build_video_lmm(mcfg, tok), tok)
    return run, ckpt

def small_cfg(**kw): return config_from_dict(BenchConfig, dict(dict(frames=2, max_new_tokens=6, n_boot=50, device='cpu', plot=False), **kw))

def test_predict_records_bad_videos_and_resumes(tiny, tmp_path):
    run, ckpt = tiny
    videos = tmp_path/'videos'; videos.mkdir()
    src = run.path/'world'/'videos'/'bench_00000.mp4'
    (videos/'good.mp4').write_bytes(src.read_bytes()); (videos/'broken.mp4').write_bytes(b'not a video at all')
    items = [dict(id=f'QA:{n}', kind='qa', benchmark='QA', video_name=n, questions=['How many objects are in the video?'], answer='two')
             for n in ('good', 'broken', 'absent', 'good')]
    items[3]['id'] = 'QA:good2'
    vlm, cfg = load_bench_model(ckpt, 'cpu'), small_cfg(batch_size=2)
    store = JsonlStore(tmp_path/'pred.jsonl')
    counts = predict(vlm, items, videos, cfg, store, seed=0, replicate='seed0', progress=False)
    assert counts == Counter(ok=2, unreadable=1, unknown_video=1)   # frames' VideoError status
    preds = collect_predictions(store, items, 'seed0')
    assert [preds[i['id']]['status'] for i in items] == ['ok', 'unreadable', 'unknown_video', 'ok']
    assert 'broken.mp4' in preds['QA:broken']['message']
    assert predict(vlm, items, videos, cfg, store, seed=0, replicate='seed0', progress=False) == Counter()
    greedy = small_cfg(batch_size=2, temperature=0.0)
    a, b = JsonlStore(tmp_path/'a.jsonl'), JsonlStore(tmp_path/'b.jsonl')
    predict(vlm, items[:1] + items[3:], videos, greedy, a, progress=False)
    predict(vlm, items[:1], videos, greedy, b, progress=False)
    assert collect_predictions(a, items[:1], 'seed0') == collect_predictions(b, items[:1], 'seed0')   # batching does not change greedy answers

def test_a_lora_adapter_is_merged(tiny, tmp_path):
    import torch
    from vlm_rlaif.model import add_role_adapter, load_video_lmm
    run, ckpt = tiny
    base = load_video_lmm(ckpt)
    peft_model = add_role_adapter(base.model, 'policy', r=4, init_lora_weights=False)
    peft_model.save_pretrained(tmp_path/'policy')
    merged = load_bench_model((ckpt, tmp_path/'policy'), 'cpu')
    ids = torch.tensor([[base.tokenizer.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        want, got = peft_model(input_ids=ids).logits, merged.model(input_ids=ids).logits
        plain = load_video_lmm(ckpt).model(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-4) and not torch.allclose(plain, got, atol=1e-4)
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='expected one saved LoRA adapter'): load_bench_model((ckpt, tmp_path/'empty'), 'cpu')

def test_read_bench_counts_bad_rows(tmp_path, tiny):
    run, _ = tiny
    (tmp_path/'qa.json').write_text(json.dumps([
        {'video_name': 'bench_00000', 'question_id': 1, 'question': 'q?', 'answer': 'a'},
        {'video_name': 'bench_00000', 'question_id': 1, 'question': 'q2?', 'answer': 'a'},
        {'video_name': 'nowhere', 'question_id': 2, 'question': 'q?', 'answer': 'a'},
        {'video_name': 'bench_00001', 'question_id': 3, 'question': '', 'answer': 'a'}]))
    items, problems = read_bench(tmp_path, small_cfg(vcg_files={}, qa_files={'MSVD-QA': 'qa.json'}), run.path/'world'/'videos')
    assert [i['id'] for i in items] == ['MSVD-QA:1'] and Counter(p['status'] for p in problems) == Counter(invalid=2, unknown_video=1)

def test_run_bench_end_to_end_without_leaking_the_key(tiny, serve, monkeypatch, caplog):
    run, ckpt = tiny
    url, script = serve([dict(status=500, body=b'flaky')],
                        default=lambda b: completion("{'pred': 'no', 'score': 1}" if "'pred'" in b['json']['messages'][-1]['content'] else "{'score': 2}", 'judge-v1'))
    monkeypatch.setenv('BENCH_TEST_KEY', KEY)
    cfg = small_cfg(judges=['exact', 'openai'], seeds=[0, 1], judge_base_url=url, judge_model='judge', judge_api_key_env='BENCH_TEST_KEY',
                    judge_backoff_s=0.0, plot=True)
    with caplog.at_level(logging.DEBUG):
        summary = run_bench(run, cfg, models={'tiny': ckpt}, progress=False)
    assert 'judge request failed' in caplog.text and KEY not in caplog.text
    out = run.path/'bench'
    results = json.loads((out/'results.json').read_text())
    exact, llm = results['rows']
    assert (exact['judge_id'], llm['judge_id']) == ('world-exact-scorer', 'judge-v1')
    assert llm['metrics']['correctness']['mean'] == 2.0 and llm['metrics']['world-QA accuracy']['mean'] == 0.0
    assert llm['counts'] == {'ok': exact['counts']['ok']} and llm['metrics']['consistency']['ci_seeds'] == [2.0, 2.0]
    assert set(summary['metrics']) == {'tiny/exact', 'tiny/openai'} and (out/'results.png').stat().st_size > 0
    assert 'VLM-RLAIF (paper)' in (out/'results.md').read_text()
    # public formats: QA rows gain `pred`, consistency rows `pred1` and `pred2`
    qa = json.loads((out/'tiny'/'seed1'/'qa.json').read_text())
    assert set(qa[0]) == {'video_name', 'question_id', 'question', 'answer', 'pred'}
    cons = json.loads((out/'tiny'/'seed0'/'vcg_consistency.json').read_text())
    assert {'Q1', 'Q2', 'pred1', 'pred2'} <= set(cons[0])
    # consistency was judged with both questions
    sent = [r['json']['messages'][-1]['content'] for r in script.requests if 'Question 2:' in r['json']['messages'][-1]['content']]
    assert sent and all(f"Question 1: {c['Q1']}\nQuestion 2: {c['Q2']}\n" in ''.join(sent) for c in cons)
    n_pred, n_req = len(JsonlStore(out/'tiny'/'predictions.jsonl')), len(script.requests)
    assert run_bench(run, cfg, models={'tiny': ckpt}, progress=False) == summary            # done: skipped
    run_bench(run, cfg, models={'tiny': ckpt}, redo=True, progress=False)
    assert len(script.requests) == n_req + 1 and len(JsonlStore(out/'tiny'/'predictions.jsonl')) == n_pred   # the probe only
    with pytest.raises(ConfigError, match='other settings'):
        run_bench(run, small_cfg(frames=3, seeds=[0, 1]), models={'tiny': ckpt}, redo=True, progress=False)
    for f in run.path.rglob('*'):
        if f.is_file(): assert KEY.encode() not in f.read_bytes(), f

def test_hf_judge_backend(tiny, tmp_path):
    run, ckpt = tiny
    judge = make_judge('hf', small_cfg(judge_checkpoint=str(ckpt), judge_batch_size=4))
    assert isinstance(judge, HFChatJudge) and str(ckpt) in judge.judge_id
    reqs = [dict(id=f'qa:{p}', criterion='qa', messages=qa_conv(p)) for p in ('blue', 'red')]
    recs = judge_requests(judge, reqs, JsonlStore(tmp_path/'cache.jsonl'), max_new_tokens=4, progress=False)
    assert all(r['status'] in ('ok', 'parse_error') and r['judge_id'] == judge.judge_id for r in recs)
    with pytest.raises(ConfigError, match="needs a checkpoint"): make_judge('hf', small_cfg())
