"""kubesim: a stateful, simulated Kubernetes API server for tests.

Real HTTP on 127.0.0.1 that the official ``kubernetes`` client, ``kubectl`` and the Airflow
KubernetesPodOperator talk to through a kubeconfig. Pods run as scripted containers or as real local
processes, driven by a simulated scheduler, kubelet and Deployment/ReplicaSet controllers::

    sim = KubeSim().start()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig", namespace="ml")
    sim.create_namespace("ml")
    sim.register_image("trainer:1", ScriptedContainer(logs=["epoch 1"], exit_code=0))
    sim.register_image("server:1", LocalProcess(argv=[sys.executable, "-m", "http.server"]))
    sim.faults.add(method="GET", path=r"/pods/[^/]+$", status=503, times=1)
    ...  # run the code under test against `kubeconfig`
    assert sim.requests_matching("PATCH", r"/pods/")
    sim.stop()

Timings are scaled down for tests (see the attributes set in ``KubeSim.__init__``).
"""

from .behaviours import LocalProcess, ScriptedContainer
from .errors import ApiError
from .faults import Fault, RecordedRequest
from .sim import KubeSim

__all__ = ["ApiError", "Fault", "KubeSim", "LocalProcess", "RecordedRequest", "ScriptedContainer"]
