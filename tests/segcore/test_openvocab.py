"""segcore.openvocab: cosine assignment, the compositional text encoder, the segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.openvocab import (
    HashedBagOfWords,
    OpenVocabSegmenter,
    TextEncoder,
    assign,
    attribute_prompts,
    attribute_scene,
)


def _brute_force(features: np.ndarray, texts: np.ndarray) -> np.ndarray:
    c = features.shape[0]
    flat = features.reshape(c, -1).T
    out = np.empty(flat.shape[0], dtype=np.int64)
    for i, f in enumerate(flat):
        sims = [float(f @ t) / (max(np.linalg.norm(f), 1e-12) * max(np.linalg.norm(t), 1e-12))
                for t in texts]
        out[i] = int(np.argmax(sims))
    return out.reshape(features.shape[1:])


@st.composite
def _problems(draw):
    spatial = draw(st.lists(st.integers(1, 5), min_size=2, max_size=3))
    c, k = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(c, *spatial))
    texts = rng.normal(size=(k, c)) * rng.uniform(0.1, 5.0, size=(k, 1))  # norms must not matter
    return feats, texts


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_assign_equals_brute_force_cosine_argmax(problem):
    feats, texts = problem
    got = assign(torch.from_numpy(feats), torch.from_numpy(texts))
    assert got.shape == feats.shape[1:]
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), _brute_force(feats, texts))


def test_assign_ignores_feature_scale():
    feats = torch.randn(4, 3, 5, 6)
    texts = torch.randn(7, 4)
    scaled = feats * torch.rand(1, 3, 5, 6).add(0.1) * 100
    assert torch.equal(assign(feats, texts), assign(scaled, texts))


@pytest.mark.parametrize(("feats", "texts"), [
    ((4, 5, 5), (3, 5)),  # C differs
    ((4,), (3, 4)),  # no spatial axes
    ((4, 5, 5), (4,)),  # text not 2-D
    ((4, 5, 5), (0, 4)),  # no prompts
])
def test_assign_rejects_bad_shapes(feats, texts):
    with pytest.raises(ConfigError):
        assign(torch.zeros(feats), torch.zeros(texts))


def test_encoder_is_deterministic_and_needs_no_vocabulary():
    torch.manual_seed(0)
    a = HashedBagOfWords(dim=16, buckets=256)
    torch.manual_seed(0)
    b = HashedBagOfWords(dim=16, buckets=256)
    unseen = ["purple wavy", "a prompt never seen"]
    assert isinstance(a, TextEncoder)
    assert torch.equal(a.encode(unseen), a.encode(unseen))
    assert torch.equal(a.encode(unseen), b.encode(unseen))
    # stable hashing (crc32), not Python's per-process salted hash(): fixed bucket ids
    ids, _ = HashedBagOfWords(dim=8, buckets=2048).token_ids(["blue striped"])
    assert ids[0, 0, :5].tolist() == [341, 1063, 723, 1701, 1143]
    assert ids[0, 1].tolist() == [435, 1889, 1646, 1665, 361, 11, 1654, 1606]


def test_encoder_is_compositional():
    enc = HashedBagOfWords(dim=16, buckets=512)
    with torch.no_grad():
        pair = enc.encode(["blue striped", "Striped, BLUE", "blue", "striped"])
    torch.testing.assert_close(pair[0], pair[1])  # order, case and punctuation do not matter
    torch.testing.assert_close(pair[0], (pair[2] + pair[3]) / 2)
    with pytest.raises(ConfigError):
        enc.encode(["  ,, "])


def test_segmenter_logits_argmax_is_assign_and_survive_state_dict_round_trip():
    torch.manual_seed(0)
    prompts = ["red smooth", "blue dotted", "green striped"]
    net = OpenVocabSegmenter(dim=8, width=8, buckets=64, prompts=prompts).eval()
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        logits = net(x)
        assert logits.shape == (2, 3, 20, 24)
        feats = net.pixel_features(x)
        for i in range(2):
            assert torch.equal(logits[i].argmax(0), assign(feats[i], net.text_embeddings))
        other = OpenVocabSegmenter(dim=8, width=8, buckets=64, prompts=prompts).eval()
        other.load_state_dict(net.state_dict())  # buffer re-embedded with the loaded table
        torch.testing.assert_close(other(x), logits)
        other.set_prompts(prompts[:2] + ["yellow wavy", "red"])
        assert other(x).shape == (2, 4, 20, 24)
    assert "text_embeddings" not in net.state_dict()  # prompts are not part of the weights


def test_attribute_scene_is_seeded_and_labels_index_prompts():
    prompts = attribute_prompts()
    assert len(prompts) == 9 and "blue striped" in prompts
    img1, lab1 = attribute_scene(3, 48, prompts)
    img2, lab2 = attribute_scene(3, 48, prompts)
    assert np.array_equal(img1, img2) and np.array_equal(lab1, lab2)
    assert img1.shape == (3, 48, 48) and lab1.min() >= 0 and lab1.max() < 9
