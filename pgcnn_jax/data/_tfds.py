"""TFDS sources: preparing a builder (failing fast offline) and materialising a split.

``tensorflow_datasets`` (and TensorFlow) are imported by the calls, not by this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pgcnn_jax.data._probe import pending_downloads, probe_hosts, remove_partial_downloads, snapshot

__all__ = ["prepare", "split_arrays"]


def prepare(builder: Any, tfds_name: str) -> Any:
    """Downloads and prepares ``builder`` (a TFDS builder of ``tfds_name``) and returns it.

    Raises:
        ValueError: Naming the builder and its directory when the hosts cannot be reached or
            the download fails; a partial download is removed.
    """

    def unavailable(err: OSError) -> ValueError:
        return ValueError(
            f"could not download / prepare {tfds_name!r} with tensorflow-datasets into "
            f"{builder.data_dir!r} ({type(err).__name__}: {err}); check the network, or pass "
            "data='npz:PATH' (--data=npz:PATH) with local arrays"
        )

    try:  # seconds, where TFDS would retry for minutes when the hosts cannot be reached
        probe_hosts(pending_downloads(builder))
    except OSError as err:
        raise unavailable(err) from err
    before = snapshot(builder)
    try:
        builder.download_and_prepare()
    except (OSError, ConnectionError) as err:  # requests' errors derive from OSError
        remove_partial_downloads(builder, before)
        raise unavailable(err) from err
    return builder


def split_arrays(builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Materialises a small TFDS split as ``uint8 [N, H, W, C]`` and ``int32 [N]``."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    @tf.autograph.experimental.do_not_convert
    def image_label(example):
        return example["image"], example["label"]

    ds = builder.as_dataset(split=split, shuffle_files=False).map(image_label).batch(4096)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)
