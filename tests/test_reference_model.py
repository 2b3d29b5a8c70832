"""The reference GPT-2: offline fallback, quirk wrappers that equal the bridge's cache, parameter copies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch as t

from utils import reference_model as rm


def test_offline_reference_is_the_random_mini_model(gpt2):
    assert gpt2.tfs_info.kind == "random-mini"
    assert gpt2.cfg.n_layers == 2 and gpt2.cfg.d_model == 128 and gpt2.cfg.d_vocab == 50257


def test_random_reference_has_nonzero_biases_and_gains():
    params = rm.reference_params()
    for name in ("blocks.0.attn.b_Q", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "blocks.0.mlp.b_in", "ln_final.b"):
        assert params[name].abs().min() > 0, name
    assert not t.allclose(params["ln_final.w"], t.ones_like(params["ln_final.w"]))
    # untied: an unembedding written with W_E.T would pass if these were equal
    assert not t.allclose(params["unembed.W_U"], params["embed.W_E"].T)


@pytest.mark.parametrize(
    "name, source, target",
    [
        ("blocks.0.attn", "blocks.0.ln1.hook_out", "blocks.0.hook_attn_out"),
        ("blocks.1.mlp", "blocks.1.ln2.hook_out", "blocks.1.hook_mlp_out"),
        ("blocks.0", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"),
        ("ln_final", "blocks.1.hook_resid_post", "ln_final.hook_out"),
        ("embed", None, "hook_embed"),
        ("pos_embed", None, "hook_pos_embed"),
    ],
)
def test_reference_forward_equals_the_cached_activation(ref_cache, name, source, target):
    tokens, _, cache = ref_cache
    x = tokens if source is None else cache[source]
    out = rm.reference_forward(name)(x)
    assert isinstance(out, t.Tensor)
    t.testing.assert_close(out, cache[target], atol=1e-6, rtol=0)


def test_pos_embed_wrapper_broadcasts_over_the_batch(ref_cache):
    tokens, _, _ = ref_cache
    batch = tokens.repeat(3, 1)
    out = rm.reference_forward("pos_embed")(batch)
    assert out.shape == (3, tokens.shape[1], 128)
    t.testing.assert_close(out[2], rm.reference_params("pos_embed")["W_pos"][: tokens.shape[1]])


def test_reference_params_are_copies():
    first = rm.reference_params("ln_final")
    first["w"].add_(100.0)
    assert not t.allclose(rm.reference_params("ln_final")["w"], first["w"])
    with pytest.raises(KeyError, match="no parameters under 'blocks.9'"):
        rm.reference_params("blocks.9")


def test_loading_does_not_move_the_global_rng():
    t.manual_seed(123)
    expected = t.rand(3)
    t.manual_seed(123)
    rm.reference_gpt2("random-mini")
    rm.reference_cache()
    assert t.equal(t.rand(3), expected)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_unknown_kind_gives_one_line_and_the_offline_fallback():
    proc = _run("from utils.reference_model import reference_gpt2; m = reference_gpt2(); print(m.tfs_info.kind)",
                TFS_REFERENCE="huge")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0].startswith("Reference model: unknown reference 'huge'")
    assert lines[-1] == "random-mini"
    assert proc.stderr == ""


def _report_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("Reference model:")]


def test_broken_weights_cache_falls_back_in_one_line(tmp_path):
    """A cached GPT-2 whose weights file is damaged: one clear line, then the random model; no traceback."""
    snapshot = tmp_path / "models--openai-community--gpt2" / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "models--openai-community--gpt2" / "refs" / "main").write_text("0123456789abcdef")
    (snapshot / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')
    (snapshot / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = _run("from utils.reference_model import reference_gpt2; print(reference_gpt2().tfs_info.kind)",
                HF_HUB_CACHE=str(tmp_path), TFS_REFERENCE="gpt2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = _report_lines(proc.stdout)
    assert len(lines) == 1, proc.stdout  # never "real weights" first and "random" after
    assert "random weights" in lines[0] and "could not be read" in lines[0] and "delete them" in lines[0]
    assert proc.stdout.strip().splitlines()[-1] == "random-mini"
    assert "Traceback" not in proc.stderr


REAL_PROBE = """
import torch as t
from utils.reference_model import reference_gpt2, reference_params
model = reference_gpt2()
params = reference_params()
print(model.tfs_info.kind, model.cfg.n_layers, model.cfg.d_model,
      t.equal(params["unembed.W_U"], params["embed.W_E"].T), float(params["unembed.b_U"].abs().max()))
print(model.to_tokens("Hello world").tolist())
"""


@pytest.mark.parametrize("repo_ids", [("openai-community/gpt2",), ("gpt2",), ("openai-community/gpt2", "gpt2")],
                         ids=["canonical-id", "old-alias", "both"])
def test_cached_real_gpt2_is_found_under_either_hub_id_and_reported_once(gpt2_hub, tmp_path, repo_ids):
    """The hub snapshot as `huggingface_hub` writes it (tests/gpt2_snapshot.py): found under the canonical id
    `openai-community/gpt2` as well as `gpt2`, loaded with tied embeddings and GPT-2's zero unembedding bias,
    and announced in exactly one line."""
    from tests.gpt2_snapshot import snapshot_env

    hub = tmp_path / "hub"
    hub.mkdir()
    for repo_id in repo_ids:
        name = "models--" + repo_id.replace("/", "--")
        (hub / name).symlink_to(gpt2_hub / "hub" / name, target_is_directory=True)
    proc = _run(REAL_PROBE, **snapshot_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _report_lines(proc.stdout) == ["Reference model: GPT-2 small, real weights (from the Hugging Face cache)"]
    summary, tokens = proc.stdout.strip().splitlines()[-2:]
    assert summary == "gpt2 2 768 True 0.0"
    assert tokens == "[[50256, 15496, 995]]"
    assert proc.stderr == ""


def test_offline_never_probes_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(rm, "_hub_reachable", lambda *a, **k: pytest.fail("probed the network while offline"))
    monkeypatch.setattr(rm, "_cached_gpt2_folder", lambda: None)
    folder, reason = rm._real_gpt2_folder()
    assert folder is None and "HF_HUB_OFFLINE" in reason


def test_config_fields_match_the_course_config(cfg):
    assert cfg.d_model == cfg.n_heads * cfg.d_head == 128
    assert cfg.d_vocab == 50257 and cfg.n_layers == 2


def test_demo_runs_on_the_real_gpt2_path(gpt2_hub):
    """`python -m utils.demo --reference gpt2` with GPT-2 in the cache: loads it, reports it once, and the course's
    model loaded with its weights reproduces its logits."""
    from tests.gpt2_snapshot import snapshot_env

    proc = subprocess.run([sys.executable, "-m", "utils.demo", "--reference", "gpt2", "--new-tokens", "3"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **snapshot_env(gpt2_hub)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _report_lines(proc.stdout) == ["Reference model: GPT-2 small, real weights (from the Hugging Face cache)"]
    diff = next(line for line in proc.stdout.splitlines() if line.startswith("max |logit diff|"))
    assert float(diff.rsplit(" ", 1)[1]) < 1e-3, diff
    assert "greedy continuation" in proc.stdout
