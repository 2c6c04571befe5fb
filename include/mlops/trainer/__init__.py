"""The reference trainer: the code the trainer image runs (``python -m mlops.trainer``).

It trains a small MLP on scikit-learn's bundled digits data set (no downloads) with
PyTorch, on CUDA with bf16 autocast when a GPU is present and on the CPU otherwise,
and writes to ``ARTIFACT_URI`` (or ``--output-dir``):

- ``model.onnx``: input ``input`` float32 [N, 64] (the 8x8 pixels divided by 16.0),
  output ``logits`` float32 [N, 10];
- ``metrics.json``: held-out accuracy and loss, throughput, device, timings;
- ``model_card.json``: parameters, data hash, image and code references;
- ``samples.json``: held-out inputs with labels, for the model server's smoke tests.

Checkpoints (``epoch-0003.pt``) go to ``CHECKPOINT_URI``; a restarted run resumes
from the newest one. Modules: ``config`` (arguments, environment, validation),
``data``, ``model``, ``storage`` (S3 or a local folder), ``checkpoints``, ``loop``
(training and evaluation), ``outputs`` (ONNX export and the JSON documents) and
``cli`` (the entrypoint). Only torch and numpy are imported eagerly by the
training path; boto3, scikit-learn and onnx are imported when they are needed.
"""
