"""The model server that runs inside the serving pods: ``python -m mlops.serving``.

It loads one model version's ONNX artifact from S3 at start, warms it up, and serves
the Open Inference Protocol (V2, ``/v2/...``), ``/predict`` (JSON), ``/health`` (liveness),
``/ready`` (loaded and warmed up), ``/metrics`` (Prometheus) and ``/version``. It refuses to start
on an artifact whose sha256 is not the registered one (``MODEL_SHA256``). It needs no Airflow: the
image installs only ``requirements.txt`` beside this file.
"""
