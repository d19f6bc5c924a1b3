"""Does bfloat16 speed up a training step on this CPU, per Keras backend? (--mixed-precision auto's
CPU rule.) A small CNN (8 convolutions, 75 px, batch 32, Adam), 10 timed steps after one warm-up.

    KERAS_BACKEND=jax python docs/raw/cpu-2026-11-22/bf16_backends.py float32
    KERAS_BACKEND=jax python docs/raw/cpu-2026-11-22/bf16_backends.py mixed_bfloat16
    JIT=0 KERAS_BACKEND=tensorflow python docs/raw/cpu-2026-11-22/bf16_backends.py mixed_bfloat16   # as ncfm runs TF on a CPU

Prints wall and CPU milliseconds per step; on a busy machine compare the CPU figures.
"""

import os
import sys
import time

import keras
import numpy as np

policy = sys.argv[1]
keras.mixed_precision.set_global_policy(policy)
keras.utils.set_random_seed(0)
inputs = keras.Input((75, 75, 3))
h = inputs
for filters in (32, 64, 128, 192):
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, keras.layers.Dense(8, activation="softmax", dtype="float32")(h))
model.compile("adam", "categorical_crossentropy", jit_compile=os.environ.get("JIT", "1") == "1")
x = np.random.default_rng(0).normal(size=(32, 75, 75, 3)).astype("float32")
y = keras.utils.to_categorical(np.arange(32) % 8, 8)
model.train_on_batch(x, y)
wall, cpu = time.time(), time.process_time()
for _ in range(10):
    model.train_on_batch(x, y)
print(keras.backend.backend(), policy, "step ms", round((time.time() - wall) * 100, 1),
      "cpu ms/step", round((time.process_time() - cpu) * 100, 1))
