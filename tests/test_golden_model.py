"""The real model and the real text: our forward against sentence-transformers."""

import os

import torch

from golden.minilm import load_minilm, model_dir
from golden.text import calibration_sentences, evaluation_sentences, sentences


def test_forward_matches_sentence_transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"  # the package ships the files; never reach a hub
    from sentence_transformers import SentenceTransformer

    text = evaluation_sentences(24) + ["a", "Short one.", "x " * 300]  # one beyond max length
    ours = load_minilm().embed(text, batch_size=7)
    st = SentenceTransformer(str(model_dir()), device="cpu")
    theirs = st.encode(text, convert_to_tensor=True, batch_size=7)
    cos = (ours * theirs).sum(-1)
    assert cos.min() >= 0.9999, cos


def test_text_sets_are_real_disjoint_and_deterministic():
    cal, ev = calibration_sentences(), evaluation_sentences()
    assert len(cal) > 1000 and len(ev) > 3000
    assert not set(cal) & set(ev)
    assert set(cal) | set(ev) == set(sentences())
    assert evaluation_sentences(500) == evaluation_sentences(500)
    assert len(set(evaluation_sentences(500))) == 500
    words = sum(len(s.split()) for s in cal[:200]) / 200
    assert 6 <= words <= 40


def test_embeddings_are_unit_length_and_order_preserving():
    m = load_minilm()
    text = evaluation_sentences(10)
    e = m.embed(text, batch_size=3)
    assert torch.allclose(e.norm(dim=-1), torch.ones(10), atol=1e-5)
    e_rev = m.embed(text[::-1], batch_size=4)
    assert torch.allclose(e, e_rev.flip(0), atol=1e-5)
