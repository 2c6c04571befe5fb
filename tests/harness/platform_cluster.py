"""A simulated cluster set up like a platform cluster: namespaces, the S3 Secret, and the
project's own images running as local processes. Used by the e2e tier and `make run CLUSTER=simulated`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from tests.harness.kubesim import KubeSim, LocalProcess

DEV_S3_CREDENTIALS = {"aws_access_key_id": "mlops-dev", "aws_secret_access_key": "mlops-dev-secret"}


def prepare_platform(
    sim: KubeSim, namespaces: Iterable[str], s3_secret: str, images: Mapping[str, str]
) -> None:
    """Create ``namespaces`` with the dev S3 Secret, and run each image's Python module
    (``{image: "mlops.trainer"}``) as a local process when a pod uses it."""
    for namespace in namespaces:
        sim.create_namespace(namespace)
        sim.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": s3_secret, "namespace": namespace},
                "stringData": DEV_S3_CREDENTIALS,
            }
        )
    for image, module in images.items():
        process = LocalProcess(argv=[sys.executable, "-m", module], env={"HOST": "127.0.0.1"})
        sim.register_image(image, process)
