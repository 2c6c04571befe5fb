"""The model server that runs inside the serving pods: ``python -m mlops.serving``.

It loads one model version's ONNX artifact from S3 at start, warms it up, and serves
``/predict`` (JSON), ``/health`` (liveness), ``/ready`` (loaded and warmed up),
``/metrics`` (Prometheus) and ``/version``. It needs no Airflow: the image installs
only ``requirements.txt`` beside this file.
"""
