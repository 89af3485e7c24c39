"""A Keras ``PyDataset`` of simulated training batches (stateless: batch = f(seed, epoch, step))."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from model.network import NetworkConfig
from model.training.patches import TrainingData, make_sample, stack_batch


class PatchDataset(keras.utils.PyDataset):
    """Batches of simulated patches for a network config.

    Batch ``step`` of epoch ``epoch`` holds samples ``(epoch * steps + step) * batch_size + j`` of
    the stream ``seed``, so a resumed run sees exactly the batches an uninterrupted one would.

    Parameters
    ----------
    config : NetworkConfig
        T, H, W, N of the network.
    data : TrainingData
    steps : int
        Batches per epoch (``len(dataset)``).
    batch_size : int
    seed : int
    """

    def __init__(self, config: NetworkConfig, data: TrainingData, *, steps: int,
                 batch_size: int = 2, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config, self.data = config, data
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Input ``(B, T, H, W, 1)`` and targets of batch ``step`` of ``epoch``."""
        first = (epoch * self.steps + step) * self.batch_size
        c = self.config
        samples = [make_sample(self.data, first + j, seed=self.seed, frames=c.T,
                               size=(c.H, c.W), n_channels=c.N)
                   for j in range(self.batch_size)]
        return stack_batch(samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.batch(self.epoch, index)

    def on_epoch_end(self) -> None:
        self.epoch += 1
