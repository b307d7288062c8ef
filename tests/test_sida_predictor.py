"""The SiDA hash predictor: sparsemax, truncated distillation, training, file round trip, errors."""

import pytest
import torch

from golden.minilm import load_minilm
from golden.moe import MoESplit
from golden.sida import (HashPredictor, PredictorFileError, _teacher, collect_routing, hit_rates,
                         load_predictor, predict_routing, save_predictor, sparsemax,
                         token_embeddings, train_predictor)


def test_sparsemax_known_values_and_simplex():
    p = sparsemax(torch.tensor([1.0, 0.5, -1.0]))
    assert torch.allclose(p, torch.tensor([0.75, 0.25, 0.0]))
    z = torch.randn(5, 7) * 3
    p = sparsemax(z)
    assert torch.allclose(p.sum(-1), torch.ones(5)) and (p >= 0).all()
    assert (p == 0).any()                                    # exact zeros, unlike softmax
    # uniform input -> uniform output; a dominant entry takes everything
    assert torch.allclose(sparsemax(torch.zeros(4)), torch.full((4,), 0.25))
    assert sparsemax(torch.tensor([10.0, 0.0, 0.0])).tolist() == [1.0, 0.0, 0.0]
    # along another dim
    assert torch.allclose(sparsemax(z.T, dim=0), p.T)


def test_truncated_teacher():
    s = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    p = _teacher(s, 2, 1.0)
    assert p[0, 0] == 0 and p[0, 2] == 0                      # truncated to the top 2
    assert torch.allclose(p.sum(-1), torch.ones(1))
    assert p[0, 1] / p[0, 3] == pytest.approx(4 / 3)          # softmax of log scores / T


def test_hit_rates_by_hand():
    true = [torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])]      # (layers 2, tokens 2, k 2)
    pred = [torch.tensor([[[1, 0], [2, 9]], [[9, 8], [7, 9]]])]
    assert hit_rates(pred, true) == pytest.approx([0.75, 0.25])


@pytest.fixture(scope="module")
def model():
    return load_minilm()


def _split(seed, experts=4, layers=6):
    g = torch.Generator().manual_seed(seed)
    return MoESplit(tuple(torch.randperm(1536, generator=g).view(experts, -1).sort(1).values
                          for _ in range(layers)))


SENTENCES = ["The module provides a way to read configuration files.",
             "Return a new list containing all items from the iterable in ascending order.",
             "Raise an exception if the file does not exist.",
             "The default value is used when no argument is given.",
             "Return the number of seconds since the epoch as a floating point number.",
             "This class implements a queue with a fixed maximum size."]


@pytest.fixture(scope="module")
def trained(model):
    torch.manual_seed(0)
    split = _split(0)
    routing, _ = collect_routing(model, split, SENTENCES, k=2)
    net = train_predictor(model, split, SENTENCES, routing, k=2, hidden=8, epochs=20, lr=2e-2,
                          batch_size=3)
    return split, routing, net


def test_training_lowers_the_distillation_loss(trained):
    split, routing, net = trained
    loss = net.meta["loss"]
    assert len(loss) == 20 and loss[-1] < 0.9 * loss[0]
    assert net.meta["truncate"] == 4 and net.meta["k"] == 2
    # the routing records are the MoE's real tokens: (layers, n, E) scores, (layers, n, k)
    assert routing[0]["scores"].shape[0] == 6 and routing[0]["experts"].shape[2] == 2


def test_predictions_shape_and_fit_on_training_text(model, trained):
    split, routing, net = trained
    pred = predict_routing(model, net, SENTENCES, 2)
    true = [r["experts"] for r in routing]
    assert [p.shape for p in pred] == [t.shape for t in true]
    assert sum(hit_rates(pred, true)) / 6 > 0.5 + 0.05        # chance is 2/4 = 0.5 per slot


def test_save_load_round_trip(model, trained, tmp_path):
    split, _, net = trained
    path = save_predictor(net, tmp_path / "p.pt", split)
    back = load_predictor(path, split)
    batch = model.tokenize(SENTENCES[:2])
    emb = token_embeddings(model, batch)
    with torch.no_grad():
        assert torch.equal(net(emb, batch.attention_mask), back(emb, batch.attention_mask))
    assert back.meta["k"] == 2


def test_load_errors(trained, tmp_path):
    split, _, net = trained
    path = save_predictor(net, tmp_path / "p.pt", split)
    with pytest.raises(PredictorFileError, match="made for experts 4, this MoE has experts 8"):
        load_predictor(path, _split(0, experts=8))
    with pytest.raises(PredictorFileError, match="made for split .*, this MoE has split"):
        load_predictor(path, _split(1))
    with pytest.raises(PredictorFileError, match="made for layers 6, this MoE has layers 5"):
        load_predictor(path, MoESplit(split.groups[:5]))
    other = save_predictor(net, tmp_path / "o.pt", split, model_id="bert-base-uncased")
    with pytest.raises(PredictorFileError, match="made for model_id 'bert-base-uncased'"):
        load_predictor(other, split)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PredictorFileError, match="corrupt.pt is corrupt or not a predictor"):
        load_predictor(bad, split)
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(PredictorFileError, match="is not a kllm-sida-predictor file"):
        load_predictor(junk, split)
    with pytest.raises(PredictorFileError, match="missing.pt does not exist"):
        load_predictor(tmp_path / "missing.pt", split)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["heads.0.weight"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "shapes.pt")
    with pytest.raises(PredictorFileError, match="holds unusable weights"):
        load_predictor(tmp_path / "shapes.pt", split)


def test_predictor_rejects_odd_hidden():
    with pytest.raises(ValueError, match="hidden size must be even"):
        HashPredictor(2, 4, hidden=7)
