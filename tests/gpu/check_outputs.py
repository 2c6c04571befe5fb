"""Summarise and check the outputs of tests/gpu/run_trainer_cuda.sh (standard library only, plus
onnxruntime/numpy when present to check model.onnx). Usage: python3 check_outputs.py OUT_DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> int:
    problems: list[str] = []
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/metrics.json"))}
    print(
        f"{'run':24s} {'device':6s} {'dtype':9s} {'epochs':>6s} {'acc':>6s} {'samples/s':>11s} "
        f"{'peak GPU MiB':>12s} {'wall s':>7s}  gpu"
    )
    for name, m in runs.items():
        peak = m.get("peak_gpu_memory_bytes")
        print(
            f"{name:24s} {m['device']:6s} {m['dtype']:9s} {m['epochs']:6d} {m['accuracy']:6.3f} "
            f"{m['samples_per_second']:11.0f} {(peak or 0) / 2**20:12.1f} {m['wall_seconds']:7.1f}  "
            f"{m.get('gpu_name') or '-'}"
        )
        if name.startswith("cuda") and (m["device"] != "cuda" or not peak):
            problems.append(f"{name}: expected a CUDA run with peak GPU memory, got {m['device']}, {peak}")
        if "bf16" in name and m["dtype"] != "bfloat16":
            problems.append(f"{name}: expected bfloat16, got {m['dtype']}")
    reference = runs.get("cuda-bf16-reference")
    if reference is None:
        problems.append("cuda-bf16-reference: no metrics.json")
    elif reference["accuracy"] < 0.9:
        problems.append(f"cuda-bf16-reference: accuracy {reference['accuracy']} < 0.9")
    elif reference.get("resumed_from_epoch") != 20:
        problems.append(
            f"cuda-bf16-reference: resumed_from_epoch {reference.get('resumed_from_epoch')}, expected 20"
        )

    def rate(name: str) -> float:
        return runs.get(name, {}).get("samples_per_second") or 0.0

    bf16, fp32 = rate("cuda-bf16-throughput"), rate("cuda-fp32-throughput")
    cpu = rate("cpu-fp32-throughput")
    if bf16 and fp32 and cpu:
        print(
            f"\nthroughput ratios: bf16/fp32 on CUDA = {bf16 / fp32:.2f}, "
            f"CUDA bf16/CPU fp32 = {bf16 / cpu:.1f}"
        )

    scaled = sorted(
        (runs[name].get("world_size", 1), rate(name)) for name in runs if name.startswith("ddp-gpus-")
    )
    if len(scaled) > 1 and scaled[0][1]:
        (one, base), (n, top) = scaled[0], scaled[-1]
        print(
            f"data-parallel: {base:.0f} samples/s on {one} GPU, {top:.0f} on {n} GPUs: "
            f"scaling {top / base:.2f}x ({top / base / n:.0%} of linear)"
        )
    for name in runs:
        if name.startswith("ddp-gpus-") and name != "ddp-gpus-1" and runs[name].get("world_size", 1) < 2:
            problems.append(
                f"{name}: expected a data-parallel run, got world_size {runs[name].get('world_size')}"
            )

    onnx_file = out / "cuda-bf16-reference" / "model.onnx"
    if onnx_file.exists():
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError:
            print("model.onnx present; onnxruntime not installed, not checked")
        else:
            samples = json.loads((out / "cuda-bf16-reference" / "samples.json").read_text())["samples"]
            session = ort.InferenceSession(onnx_file.read_bytes(), providers=["CPUExecutionProvider"])
            x = np.array([s["input"] for s in samples], dtype=np.float32)
            predicted = session.run(["logits"], {"input": x})[0].argmax(axis=1).tolist()
            agree = sum(p == s["predicted"] for p, s in zip(predicted, samples, strict=True))
            print(f"model.onnx on onnxruntime: {agree}/{len(samples)} predictions agree with the trainer")
            if agree != len(samples):
                problems.append("model.onnx disagrees with the trained model")

    for problem in problems:
        print("PROBLEM:", problem)
    print("GPU check:", "FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
