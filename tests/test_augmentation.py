"""Fresh random augmentation for the CNNs: crops, mirrors and colour jitter that keep a photo a photo; CutMix."""

import numpy as np
import pytest
import tensorflow as tf

from core import augmentation


def gradient_batch(count=8, size=32):
    """Left-to-right ramp in red, top-to-bottom in green, constant blue: any crop or mirror shows in it."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 100.0)], -1)
    return np.repeat(image[None], count, axis=0)


def test_augmented_batches_keep_shape_and_pixel_range_and_differ_every_call():
    batch = gradient_batch()
    first = augmentation.random_crop_flip_jitter(tf.constant(batch)).numpy()
    second = augmentation.random_crop_flip_jitter(tf.constant(batch)).numpy()
    assert first.shape == batch.shape and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 255
    assert not np.allclose(first, second)
    assert not np.allclose(first[0], first[1])  # each image draws its own crop and colours


def test_without_cropping_or_jitter_each_image_is_itself_or_its_mirror_and_both_occur(monkeypatch):
    monkeypatch.setattr(augmentation, "CROP_AREA", (1.0, 1.0))
    monkeypatch.setattr(augmentation, "CROP_LOG_RATIO", (0.0, 0.0))
    monkeypatch.setattr(augmentation, "JITTER", (1.0, 1.0))
    batch = gradient_batch(count=64)
    out = augmentation.random_crop_flip_jitter(tf.constant(batch)).numpy()
    same = np.all(np.isclose(out, batch, atol=0.5), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(out, batch[:, :, ::-1], atol=0.5), axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()


def test_crops_zoom_in(monkeypatch):
    monkeypatch.setattr(augmentation, "JITTER", (1.0, 1.0))  # contrast jitter alone would narrow the span too
    batch = gradient_batch(count=32)
    out = augmentation.random_crop_flip_jitter(tf.constant(batch)).numpy()
    red_span = out[..., 0].max(axis=(1, 2)) - out[..., 0].min(axis=(1, 2))
    assert np.median(red_span) < 0.95 * 255  # most crops show only part of the ramp


def test_colour_jitter_never_swaps_which_channel_of_a_pixel_is_larger(monkeypatch):
    # Contrast, brightness and saturation scale about a grey level by positive factors: hues stay put.
    monkeypatch.setattr(augmentation, "CROP_AREA", (1.0, 1.0))
    monkeypatch.setattr(augmentation, "CROP_LOG_RATIO", (0.0, 0.0))
    batch = gradient_batch(count=32)
    out = augmentation.random_crop_flip_jitter(tf.constant(batch)).numpy()
    mirrored = out[:, 0, 0, 0] > out[:, 0, -1, 0]  # the red ramp runs right to left
    source = np.where(mirrored[:, None, None, None], batch[:, :, ::-1], batch)
    redder = source[..., 0] > source[..., 2] + 1
    assert redder.any() and np.all(out[..., 0][redder] >= out[..., 2][redder])
    assert not np.allclose(out, source, atol=1)


def test_cutmix_pastes_one_box_of_a_partner_into_each_image_and_mixes_the_targets_by_its_area():
    count, size = 16, 20
    batch = np.repeat(np.arange(count, dtype=np.float32)[:, None, None, None] * 10, size, 1)
    batch = np.repeat(np.repeat(batch, size, 2), 3, 3)  # image i is the constant 10 i
    shares = []
    for _ in range(20):
        mixed, targets = (t.numpy() for t in augmentation.cutmix(tf.constant(batch), tf.range(count), count, 1.0))
        assert mixed.shape == batch.shape and targets.shape == (count, count)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        boxes = set()
        for i in range(count):
            values, pixels = np.unique(mixed[i, :, :, 0], return_counts=True)
            partner = [int(v) // 10 for v in values if int(v) // 10 != i]
            pasted = 0.0 if not partner else pixels[values != 10 * i].sum() / size**2
            assert len(partner) <= 1 and targets[i, i] == pytest.approx(1 - pasted, abs=1e-6)
            if partner:
                assert targets[i, partner[0]] == pytest.approx(pasted, abs=1e-6)
                boxes.add(tuple(map(tuple, np.argwhere(mixed[i, :, :, 0] != 10 * i)[[0, -1]])))
        assert len(boxes) <= 1  # one box for the whole batch
        shares.append(1 - targets[0, 0] if targets[0].max() < 1 else 0.0)
    assert len(set(np.round(shares, 4))) > 5  # the box's size is drawn anew for every batch


def test_mixup_blends_each_item_with_a_partner_by_one_weight_per_batch_and_mixes_the_targets_alike():
    count = 16
    batch = np.eye(count, dtype=np.float32)[:, None, None, :] * np.ones((1, 3, 3, 1), np.float32)  # item i is e_i
    weights = []
    for _ in range(20):
        mixed, targets = (t.numpy() for t in augmentation.mixup(tf.constant(batch), tf.range(count), count, 0.4))
        assert mixed.shape == batch.shape and targets.shape == (count, count)
        # Item i is labelled i and is e_i: its blend and its target are the same mixture.
        np.testing.assert_allclose(mixed[:, 1, 2, :], targets, atol=1e-6)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        assert ((targets > 1e-6).sum(axis=1) <= 2).all()  # itself and one partner
        own = targets[np.arange(count), np.arange(count)]
        blended = own < 1 - 1e-6
        if blended.any():
            assert np.ptp(own[blended]) < 1e-6  # one weight for the whole batch
            weights.append(own[blended][0])
    assert len(set(np.round(weights, 4))) > 5  # the weight is drawn anew for every batch
