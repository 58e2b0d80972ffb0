"""Siamese networks, the black-box learner and the fine-tuning baselines: the properties that
define each, on small models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metarun.algorithms.baseline import Baseline
from metarun.algorithms.blackbox import BlackBox
from metarun.algorithms.siamese import Siamese
from metarun.backbones.conv4 import Conv4
from metarun.build import train_sampler
from metarun.data.batches import ImageSampler, PairSampler
from metarun.data.episodes import ClassImages
from metarun.types import EpisodeData, LabelledBatch, PairBatch
from tests.helpers import compose_config, random_image_batch


def _conv() -> Conv4:
    return Conv4((1, 28, 28), hidden=16)


def _bank() -> ClassImages:
    g = torch.Generator().manual_seed(0)
    return ClassImages(torch.randint(0, 256, (10, 4, 1, 28, 28), dtype=torch.uint8, generator=g))


# --- Siamese ---------------------------------------------------------------------------------

def test_siamese_class_score_is_its_best_matching_support_image() -> None:
    torch.manual_seed(0)
    model = Siamese(_conv()).eval()
    task = random_image_batch(1, 4, 3, 2)[0]
    scores = model.adapt(task.support_x, task.support_y)(task.query_x)
    with torch.no_grad():
        pair = model.similarity(model.backbone(task.query_x), model.backbone(task.support_x))
    expected = pair.view(len(task.query_x), 4, 3).amax(-1)  # support is grouped by class
    torch.testing.assert_close(scores, expected)


def test_siamese_trains_on_pairs_with_verification_loss() -> None:
    torch.manual_seed(0)
    model = Siamese(_conv(), pairs=6, same_fraction=0.5)
    sampler = train_sampler(model, _bank(), EpisodeData(ways=5, shots=1, queries=1))
    assert isinstance(sampler, PairSampler) and sampler.n_same == 3
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert isinstance(batch, PairBatch) and len(batch.same) == 12
    out = model.meta_train_step(batch)
    out.loss.backward()
    assert 0.0 <= out.metrics["acc"] <= 1.0
    assert model.verify.weight.grad is not None and model.verify.weight.grad.abs().sum() > 0


def test_siamese_takes_one_forward_pass_per_group_of_pairs() -> None:
    """Batch-norm statistics per group of ``pairs`` pairs (a task's worth, as the episodic
    learners take per task): a step's loss over two groups is the mean of each group's."""
    torch.manual_seed(0)
    model = Siamese(_conv(), pairs=6, same_fraction=0.5)
    batch = PairSampler(_bank(), 6, 0.5).sample(2, torch.Generator().manual_seed(0))
    groups = [PairBatch(first=batch.first[i:i + 6], second=batch.second[i:i + 6],
                        same=batch.same[i:i + 6], classes=batch.classes[i:i + 6])
              for i in (0, 6)]
    whole = model.meta_train_step(batch).loss
    each = [model.meta_train_step(g).loss for g in groups]
    torch.testing.assert_close(whole, (each[0] + each[1]) / 2)


def test_siamese_with_pairs_null_trains_on_every_pair_of_each_episode() -> None:
    """``algo.pairs=null``: the train split's episodes (``train_ways``, ``train_queries``), one
    forward pass each; the loss is binary cross-entropy over all n(n-1)/2 pairs of its images,
    same-class pairs weighted to ``same_fraction`` of it."""
    torch.manual_seed(0)
    model = Siamese(_conv(), pairs=None, same_fraction=0.3, train_ways=4, train_queries=2)
    sampler = train_sampler(model, _bank(), EpisodeData(ways=5, shots=1, queries=1))
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape[1] == 4 and batch.query_x.shape[1] == 8
    out = model.meta_train_step(batch)
    expected = []
    for task in batch:
        x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y,
                                                                   task.query_y])
        z = model.backbone(x)
        same, other = [], []
        for i in range(len(y)):
            for j in range(i + 1, len(y)):
                logit = model.verify_logits(z[i], z[j])
                target = torch.tensor(float(y[i] == y[j]))
                (same if y[i] == y[j] else other).append(
                    F.binary_cross_entropy_with_logits(logit, target))
        assert (len(same), len(other)) == (4 * 3, 66 - 12)  # 12 images: 4 classes of 3
        expected.append(0.3 * torch.stack(same).mean() + 0.7 * torch.stack(other).mean())
    torch.testing.assert_close(out.loss, torch.stack(expected).mean())
    out.loss.backward()
    assert 0.0 <= out.metrics["acc"] <= 1.0
    assert model.verify.weight.grad is not None and model.verify.weight.grad.abs().sum() > 0


def test_siamese_refuses_episode_keys_with_sampled_pairs() -> None:
    with pytest.raises(ValueError, match="algo.train_ways and algo.train_queries.*pairs=null"):
        Siamese(_conv(), pairs=32, train_ways=8)


# --- black box -------------------------------------------------------------------------------

def test_blackbox_permuting_queries_only_permutes_predictions() -> None:
    torch.manual_seed(0)
    model = BlackBox(_conv(), max_ways=5, max_shots=2).eval()
    task = random_image_batch(1, 5, 2, 3)[0]
    predict = model.adapt(task.support_x, task.support_y)
    perm = torch.randperm(len(task.query_x))
    torch.testing.assert_close(predict(task.query_x[perm]), predict(task.query_x)[perm])
    # Each query is read on its own: one query alone gets the same logits as in the batch.
    torch.testing.assert_close(predict(task.query_x[:1]), predict(task.query_x)[:1])


def test_blackbox_reads_the_support_order_only_as_given_at_meta_test() -> None:
    torch.manual_seed(0)
    model = BlackBox(_conv(), max_ways=5, max_shots=2)
    task = random_image_batch(1, 5, 2, 3)[0]
    with torch.no_grad():
        s, q = model.backbone(task.support_x), model.backbone(task.query_x)
        model.eval()  # meta-test: deterministic for a given order
        torch.testing.assert_close(model.predict(s, task.support_y, q, 5),
                                   model.predict(s, task.support_y, q, 5))
        model.train()  # meta-training: a fresh support order per call
        torch.manual_seed(1)
        a = model.predict(s, task.support_y, q, 5)
        torch.manual_seed(2)
        b = model.predict(s, task.support_y, q, 5)
        torch.manual_seed(1)
        c = model.predict(s, task.support_y, q, 5)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize(("ways", "shots"), [(2, 1), (3, 2), (5, 1), (5, 3)])
def test_blackbox_handles_any_ways_and_shots_up_to_its_maximum(ways: int, shots: int) -> None:
    torch.manual_seed(0)
    model = BlackBox(_conv(), max_ways=5, max_shots=3)
    task = random_image_batch(1, ways, shots, 2)[0]
    assert model.adapt(task.support_x, task.support_y)(task.query_x).shape == (2 * ways, ways)
    model.meta_train_step(random_image_batch(2, ways, shots, 2)).loss.backward()


def test_blackbox_refuses_tasks_beyond_its_maximum() -> None:
    model = BlackBox(_conv(), max_ways=5, max_shots=1)
    with pytest.raises(ValueError, match="algo.max_ways = 5"):
        model.check_task(6)
    task = random_image_batch(1, 5, 2, 1)[0]
    with pytest.raises(ValueError, match="algo.max_shots"):
        model.adapt(task.support_x, task.support_y)


def test_blackbox_train_queries_change_the_training_episodes_only() -> None:
    """``algo.train_queries``: fewer query sequences per training episode (each query is read
    after the whole support sequence); meta-test keeps ``eval.queries``."""
    task = EpisodeData(ways=5, shots=1, queries=15)
    assert BlackBox(_conv()).training_data(task) == task
    model = BlackBox(_conv(), max_ways=5, max_shots=1, train_queries=3)
    assert model.training_data(task) == EpisodeData(5, 1, 3)
    sampler = train_sampler(model, _bank(), task)
    assert sampler.sample(2, torch.Generator().manual_seed(0)).query_x.shape[1] == 15
    with pytest.raises(ValueError, match="algo.train_queries must be a positive integer"):
        BlackBox(_conv(), train_queries=0)


# --- fine-tuning baselines -------------------------------------------------------------------

@pytest.mark.parametrize("head", ["linear", "cosine"])
@pytest.mark.parametrize("bn_mode", ["running", "batch"])
def test_finetuning_never_updates_the_frozen_body(head: str, bn_mode: str) -> None:
    torch.manual_seed(0)
    model = Baseline(_conv(), train_classes=10, head=head, bn_mode=bn_mode)
    model.meta_train_step(ImageSampler(_bank(), 8).sample(1, torch.Generator())).loss.backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    task = random_image_batch(1, 5, 2, 3)[0]
    logits = model.adapt(task.support_x, task.support_y)(task.query_x)
    assert logits.shape == (15, 5)
    for k, v in model.state_dict().items():  # parameters and batch-norm buffers alike
        assert torch.equal(v, before[k]), k
    for k, p in model.named_parameters():  # and no gradient reached them
        assert torch.equal(p.grad, grads[k]), k


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_finetuned_head_fits_the_support_set_deterministically(head: str) -> None:
    torch.manual_seed(0)
    # Batch statistics: an untrained body's running statistics would shrink every feature.
    model = Baseline(_conv(), train_classes=10, head=head, finetune_steps=200, bn_mode="batch")
    task = random_image_batch(1, 5, 2, 3)[0]
    support = model.adapt(task.support_x, task.support_y)(task.support_x)
    assert torch.equal(support.argmax(-1), task.support_y)
    again = model.adapt(task.support_x, task.support_y)(task.support_x)
    assert torch.equal(support, again)
    if head == "cosine":
        assert support.abs().max() <= model.scale + 1e-5


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_pretraining_is_classification_over_all_training_classes(head: str) -> None:
    torch.manual_seed(0)
    model = Baseline(_conv(), train_classes=10, head=head, batch_size=8)
    sampler = train_sampler(model, _bank(), EpisodeData(ways=5, shots=1, queries=1))
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert isinstance(batch, LabelledBatch) and batch.x.shape[0] == 16
    out = model.meta_train_step(batch)
    z = model.backbone(batch.x)
    w = model.classifier.weight
    logits = (F.linear(z, w, model.classifier.bias) if head == "linear"
              else model.scale * F.normalize(z, dim=-1) @ F.normalize(w, dim=-1).T)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, batch.y))
    with pytest.raises(ValueError, match="has 11 classes"):
        train_sampler(model, ClassImages(torch.zeros(11, 2, 1, 28, 28, dtype=torch.uint8)),
                      EpisodeData(5, 1, 1))


def test_baseline_gets_the_train_split_class_count_at_build_time() -> None:
    from metarun.build import algorithm as build_algorithm
    from metarun.tasktypes import CLASSIFICATION

    class Data:
        input_shape = (1, 28, 28)
        task_type = CLASSIFICATION

    for algo, head in (("baseline", "linear"), ("baselinepp", "cosine")):
        model = build_algorithm(compose_config(f"algo={algo}"), Data(), train_classes=37)
        assert isinstance(model, Baseline) and model.head == head
        assert model.classifier.out_features == 37
    with pytest.raises(ValueError, match="train split"):
        build_algorithm(compose_config("algo=baseline"), Data(), train_classes=None)
