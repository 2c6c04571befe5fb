"""The trainer's exit codes: the contract between the trainer and whoever runs it.

The training task (``mlops.training.failures``) decides from these codes whether a failed
pod is worth a retry, the way a Kubernetes Job's ``podFailurePolicy.rules[].onExitCodes``
or Argo's ``retryStrategy.expression`` would. The values follow BSD ``sysexits.h`` where
one fits, so they cannot be confused with Python's own 1 (an uncaught exception) or with
128 + a signal number (a container killed by a signal):

======  =====================  =========================================================  ========
code    name                   meaning                                                    retried
======  =====================  =========================================================  ========
0       OK                     trained and every output written
1       TRAINING_CODE          a bug, the ONNX export, anything unexpected (traceback)    no [1]_
64      CONFIGURATION          bad arguments or environment, an unusable bucket or        no
                               credentials (``EX_USAGE``/``EX_CONFIG`` kind of mistakes)
65      DATA                   the data set is missing or malformed, or a checkpoint is   no
                               incompatible with this run (``EX_DATAERR``)
75      TRANSIENT_STORAGE      S3 unreachable, throttled, 5xx or timed out after the      yes
                               client's own retries (``EX_TEMPFAIL``); the retry resumes
                               from the newest checkpoint
143     SIGTERM                stopped by SIGTERM (eviction, preemption, deletion); the   yes
                               newest checkpoint is kept for the retry
======  =====================  =========================================================  ========

.. [1] unless the run sets ``retry_on_training_failure``.

Every non-zero exit but 143 prints one line, ``trainer: error: <field>: <problem>``, to stderr
and to the Kubernetes termination message (except a bug, which keeps its traceback).
"""

from __future__ import annotations

OK = 0
TRAINING_CODE = 1
CONFIGURATION = 64
DATA = 65
TRANSIENT_STORAGE = 75
SIGTERM = 143

NAMES: dict[int, str] = {
    OK: "ok",
    TRAINING_CODE: "training code",
    CONFIGURATION: "configuration",
    DATA: "data",
    TRANSIENT_STORAGE: "transient storage",
    SIGTERM: "stopped by SIGTERM",
}
