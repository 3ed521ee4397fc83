import itertools
import random

import numpy as np
import torch

from parsenet.engine.sampler import ResumableSampler, SeededSamples


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_epochs_are_permutations_reshuffled_with_seed_plus_epoch():
    sampler = ResumableSampler(7, seed=3)
    drawn = take(sampler, 21)
    epochs = [[i for i, _ in drawn[k * 7:(k + 1) * 7]] for k in range(3)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch
    assert take(ResumableSampler(7, seed=3), 21) == drawn  # seeded
    assert [i for i, _ in take(ResumableSampler(7, seed=4), 7)] != epochs[0]


def test_resume_continues_with_exactly_the_same_samples_and_seeds():
    full = take(ResumableSampler(5, seed=0), 23)
    for consumed in (0, 3, 5, 12):
        sampler = ResumableSampler(5, seed=0)
        assert sampler.load_state_dict(ResumableSampler(5, seed=0).state_dict(consumed))
        assert take(sampler, 23 - consumed) == full[consumed:]


def test_ranks_split_the_single_process_order_and_share_its_seeds():
    # The global batch of 2 ranks x 2 samples is the single-process batch of 4, sample for
    # sample, with the same augmentation seeds: what makes DDP equal to one process.
    single = take(ResumableSampler(8, seed=1), 16)
    ranks = [take(ResumableSampler(8, seed=1, rank=r, world_size=2), 8) for r in (0, 1)]
    for it in range(4):
        global_batch = ranks[0][2 * it:2 * it + 2] + ranks[1][2 * it:2 * it + 2]
        assert sorted(global_batch) == sorted(single[4 * it:4 * it + 4])


def test_seeded_samples_fix_the_augmentation_and_leave_the_caller_rng_alone():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(2), np.random.rand(), random.random()

    data = SeededSamples(Noisy())
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    a = data[(1, 1234)]
    assert torch.equal(torch.rand(1), expected_next)  # caller's stream untouched
    b = data[(1, 1234)]
    c = data[(1, 1235)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert not torch.equal(a[0], c[0]) and a[1] != c[1] and a[2] != c[2]
